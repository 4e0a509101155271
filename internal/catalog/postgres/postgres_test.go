package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/catalog/catalogtest"
	"github.com/coffre/coffre/internal/clock"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/testutil"
)

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) catalogtest.Opener {
		dsn := TestSchemaDSN(t)
		return func(clk clock.Clock) (catalog.Catalog, error) { return Open(context.Background(), dsn, clk) }
	})
}

// TestTwoServersShareOneCatalog claims jobs through two catalogs (two
// connection pools, as two coffre servers would have) on one database.
func TestTwoServersShareOneCatalog(t *testing.T) {
	dsn := TestSchemaDSN(t)
	ctx := context.Background()
	clk := clock.NewFake(catalogtest.Base)
	var servers []*Catalog
	for i := 0; i < 2; i++ {
		c, err := Open(ctx, dsn, clk) // the second Open finds the schema migrated
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		servers = append(servers, c)
	}
	const n = 30
	for i := 0; i < n; i++ {
		if _, err := servers[i%2].CreateJob(ctx, catalog.Job{Kind: catalog.KindBackup, State: catalog.StatePending}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := servers[w%2]
			for {
				j, err := c.ClaimJob(ctx, fmt.Sprint("server", w%2, "-worker", w), catalog.ClaimLimits{})
				if errors.Is(err, catalog.ErrNoJob) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := servers[(w+1)%2].AppendAudit(ctx, catalog.AuditEvent{Action: "job.claim", Object: j.ID}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[j.ID]++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d distinct jobs, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("job %s claimed %d times", id, k)
		}
	}
	if broken, err := servers[0].VerifyAudit(ctx); err != nil || broken != 0 {
		t.Fatalf("audit chain written by two servers broken at %d (%v)", broken, err)
	}
}

func TestPasswordInDSNRefused(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 user=coffre password=hunter2 dbname=coffre",
		"host=127.0.0.1 password = 'x y'",
		"postgres://coffre:hunter2@127.0.0.1:5432/coffre",
		"postgresql://coffre@127.0.0.1/coffre?password=hunter2",
	} {
		_, err := Open(context.Background(), dsn, clock.NewFake(catalogtest.Base))
		if !errors.Is(err, ErrPasswordInDSN) || hint.Of(err) == "" {
			t.Errorf("Open(%q) = %v, want ErrPasswordInDSN with a hint", dsn, err)
		}
	}
	for _, dsn := range []string{"host=127.0.0.1 user=coffre passfile=/x", "postgres://coffre@h/db?sslmode=disable"} {
		if hasPassword(dsn) {
			t.Errorf("hasPassword(%q) = true", dsn)
		}
	}
}

func TestUnreachableNamesHostPort(t *testing.T) {
	port := testutil.FreePort(t) // nothing listens there
	_, err := Open(context.Background(), "host=127.0.0.1 port="+strconv.Itoa(port)+" user=coffre dbname=coffre connect_timeout=2",
		clock.NewFake(catalogtest.Base))
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	if want := "127.0.0.1:" + strconv.Itoa(port); !strings.Contains(err.Error(), want) || hint.Of(err) == "" {
		t.Fatalf("error %q (hint %q) should name %s and give a hint", err, hint.Of(err), want)
	}
}
