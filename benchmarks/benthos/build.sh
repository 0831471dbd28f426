#!/usr/bin/env bash
# Builds the Benthos v4.60.0 peer used by the throughput comparison in
# README.md. Nothing of Benthos is kept in this repository: the script writes a
# throwaway module (go.mod + main.go) into DIR and builds DIR/benthos there.
#
# usage: benchmarks/benthos/build.sh [DIR]      (default DIR: /tmp/benthos-peer)
#
# The module proxy lists no versions for benthos/v4, so `go install ...@latest`
# and `go install ...@v4.60.0` are refused; `go get` with the explicit version
# works.
set -euo pipefail

DIR=${1:-/tmp/benthos-peer}
VERSION=${BENTHOS_VERSION:-v4.60.0}

mkdir -p "$DIR"
cd "$DIR"

cat > main.go <<'GO'
// Benthos peer for deident's throughput comparison: only the io (file) and
// pure (bloblang, mapping) components, nothing else linked in.
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
GO

rm -f go.mod go.sum
go mod init benthos-peer >/dev/null 2>&1
go get "github.com/redpanda-data/benthos/v4/public/service@${VERSION}"
go mod tidy
go build -trimpath -o benthos .
./benthos --version || true
echo "built $DIR/benthos"
