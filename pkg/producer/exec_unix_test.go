//go:build unix

package producer_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/producer"
)

// TestExecTimeoutKillsChildren: a command that outlives its timeout is
// killed with everything it started; its children used to live on (here a
// sleep of a minute), one more with every poll.
func TestExecTimeoutKillsChildren(t *testing.T) {
	t.Parallel()
	pidFile := t.TempDir() + "/pid"
	fetch := producer.ExecFetch(`sleep 60 & echo $! > ` + pidFile + `; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := fetch(ctx); err == nil {
		t.Fatal("a command past its timeout succeeded")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if alive(pid) {
			return errors.New("the command's child is still running")
		}
		return nil
	})
}

// alive reports whether pid runs (a zombie, waiting for its reaper, does
// not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc: kill(0) said it exists
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
