//go:build !amd64

package gate

func quadLeaf(b *[quadRoom]byte, zero int) int { return quadLeafGo(b, zero) }
