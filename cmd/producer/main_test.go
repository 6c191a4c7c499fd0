package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
)

func TestMain(m *testing.M) {
	roomtest.RunAsCommand(func(args []string) int {
		return exitCode(run(context.Background(), args, os.Stdin, os.Stderr), os.Stderr)
	})
	os.Exit(m.Run())
}

// TestStdin pipes lines into `producer --stdin`: good lines are published,
// bad ones reported with their line number, and the exit status says that
// some were skipped.
func TestStdin(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	sub, err := nc.SubscribeSync("roomcast.room.orders")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	input := "{\"open\": 3}\nnot json\n\n{\"open\": 4, \"ts\": 1}\n[1]\n"
	p := roomtest.StartCommandWithInput(t, input, []string{"--stdin", "--room", "orders", "--nats-url", ns.ClientURL()}, "ROOMCAST_CONFIG=../../config.yaml")
	_ = p.Cmd.Wait()
	if code := p.Cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1 (lines skipped); output:\n%s", code, p.Output())
	}
	for _, want := range []string{"line 2:", "line 5:", "published=2", "skipped=2"} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("output does not mention %q:\n%s", want, p.Output())
		}
	}
	for _, want := range []string{`"open":3}`, `{"open":4,"ts":1}`} {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(m.Data), want) {
			t.Errorf("published %s, want …%s", m.Data, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--stdin"}, "--room"},
		{[]string{"--room", "x"}, "--stdin"},
		{[]string{"--stdin", "--room", "a.b", "--nats-url", "nats://127.0.0.1:1"}, "room"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		p := roomtest.StartCommandWithInput(t, "{}\n", tt.args, "ROOMCAST_CONFIG=../../config.yaml")
		_ = p.Cmd.Wait()
		if code := p.Cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(p.Output(), tt.want) {
			t.Errorf("%v: exit %d, output %q; want failure mentioning %q", tt.args, code, p.Output(), tt.want)
		}
	}
}
