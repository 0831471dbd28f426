package kanon

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deident/deident/internal/config"
	"github.com/deident/deident/internal/jsonscan"
)

// The UCI Adult data set as prepared by ARX (testdata/adult/README.md):
// 30,162 records, each its own entity, quasi-identifiers as in the
// literature, ARX's generalization hierarchies as ladders.
var adultQIs = []string{"age", "sex", "race", "marital-status", "education", "native-country", "workclass"}

func loadAdult(t testing.TB) [][]string {
	t.Helper()
	f, err := os.Open("testdata/adult/adult.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	header := strings.Split(sc.Text(), ";")
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	var rows [][]string
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ";")
		row := make([]string, len(adultQIs))
		for i, q := range adultQIs {
			row[i] = string(jsonscan.AppendQuoted(nil, []byte(parts[col[q]])))
		}
		rows = append(rows, row)
	}
	return rows
}

func adultConfig(mode config.KAnonMode, k, delayRecords int) config.KAnon {
	c := config.KAnon{K: k, Entity: "id", Mode: mode, EventTime: "ts", MaxDelayRecords: delayRecords}
	for _, q := range adultQIs {
		c.QuasiIdentifiers = append(c.QuasiIdentifiers, config.QuasiIdentifier{
			Path: q, Ladder: config.Ladder{Hierarchy: &config.LadderHierarchy{File: "adult/adult_hierarchy_" + q + ".csv"}},
		})
	}
	if mode == config.KAnonRecord {
		c.MaxDelay = 1000 * time.Hour // the record bound decides
	} else {
		c.Window = time.Hour
	}
	return c
}

type adultResult struct {
	suppression, height, ncp float64
	classes                  uint64
}

func runAdult(t testing.TB, rows [][]string, c config.KAnon) adultResult {
	s := newStage(t, c, &clock{t0})
	var outs []Output
	for i, row := range rows {
		outs = s.Add(outs[:0], Record{Partition: 0, Offset: int64(i), Entity: fmt.Sprint(i), QI: row, EventTime: t0})
	}
	s.Flush(outs[:0])
	st := s.Stats()
	if st.In != uint64(len(rows)) || st.Held != 0 || st.In != st.Released+st.Suppressed {
		t.Fatalf("accounting %+v", st)
	}
	// Information loss over all records: a suppressed record counts as fully generalized.
	n := float64(st.In)
	q := len(adultQIs)
	return adultResult{
		suppression: st.SuppressionRate(),
		height:      (st.LevelSum + float64(st.Suppressed*uint64(q))) / n / float64(q),
		ncp:         (st.NCPSum + float64(st.Suppressed*uint64(q))) / n / float64(q),
		classes:     st.Classes + st.Groups, // released classes (record) or published groups (aggregate)
	}
}

// mondrianNCP10 is batch Mondrian's NCP on the same data, quasi-identifiers
// and NCP definition at k=10 (python3 benchmarks/kanon/mondrian.py).
const mondrianNCP10 = 0.117

// TestAdultQuality streams UCI Adult through record mode (max_delay of
// 1,000 records, and with everything held: the batch bound of the same
// algorithm) and aggregate mode (one window), for k in {2, 5, 10, 20, 50},
// and logs suppression rate, normalized generalization height and NCP
// (both counting suppressed records as fully generalized). At k=10 with
// max_delay 1,000 records it holds record mode to the targets:
// suppression under 2%, NCP at most twice Mondrian's.
func TestAdultQuality(t *testing.T) {
	if testing.Short() {
		t.Skip("UCI Adult: 30,162 records")
	}
	rows := loadAdult(t)
	if len(rows) != 30162 {
		t.Fatalf("%d rows, want 30162", len(rows))
	}
	t.Logf("%-28s %4s %12s %8s %8s %15s", "mode", "k", "suppressed", "height", "NCP", "classes/groups")
	for _, k := range []int{2, 5, 10, 20, 50} {
		for _, v := range []struct {
			name  string
			mode  config.KAnonMode
			delay int
		}{
			{"record, max_delay 1000 recs", config.KAnonRecord, 1000},
			{"record, all held (batch)", config.KAnonRecord, 0},
			{"aggregate, one window", config.KAnonAggregate, 0},
		} {
			r := runAdult(t, rows, adultConfig(v.mode, k, v.delay))
			t.Logf("%-28s %4d %11.2f%% %8.3f %8.3f %15d", v.name, k, 100*r.suppression, r.height, r.ncp, r.classes)
			if v.mode == config.KAnonRecord && v.delay == 1000 && k == 10 {
				if r.suppression >= 0.02 {
					t.Errorf("k=10, max_delay 1000 records: suppression %.2f%%, target under 2%%", 100*r.suppression)
				}
				if r.ncp > 2*mondrianNCP10 {
					t.Errorf("k=10, max_delay 1000 records: NCP %.3f, target at most twice batch Mondrian's %.3f", r.ncp, mondrianNCP10)
				}
			}
		}
	}
}

func BenchmarkAdultRecordMode(b *testing.B) {
	rows := loadAdult(b)
	c := adultConfig(config.KAnonRecord, 10, 1000)
	s := newStage(b, c, &clock{t0})
	var outs []Output
	ids := make([]string, len(rows))
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		outs = s.Add(outs[:0], Record{Offset: int64(i), Entity: ids[i%len(rows)], QI: rows[i%len(rows)]})
		i++
	}
}
