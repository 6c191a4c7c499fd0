package roomtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/internal/logtest"
)

// The test binary of a command doubles as the command: TestMain calls
// RunAsCommand first, and StartCommand re-executes the test binary with
// this variable set, so process-level tests need no separate build.
const commandEnv = "ROOMCAST_TEST_RUN_COMMAND"

// RunAsCommand runs main instead of the tests when the binary was started
// by StartCommand. Call it first thing in TestMain.
func RunAsCommand(main func(args []string) int) {
	if os.Getenv(commandEnv) != "1" {
		return
	}
	args := strings.Split(os.Getenv(commandEnv+"_ARGS"), "\x1f")
	if len(args) == 1 && args[0] == "" {
		args = nil
	}
	os.Exit(main(args))
}

// Process is a command started by StartCommand.
type Process struct {
	Cmd *exec.Cmd
	out logtest.Buffer
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

func (p *Process) Write(b []byte) (int, error) { return p.out.Write(b) }

// StartCommand runs the test binary as the command with args and extra
// environment variables; it is killed when the test ends.
func StartCommand(t testing.TB, args []string, env ...string) *Process {
	t.Helper()
	return StartCommandWithInput(t, "", args, env...)
}

// StartCommandWithInput is StartCommand with input as standard input.
func StartCommandWithInput(t testing.TB, input string, args []string, env ...string) *Process {
	t.Helper()
	p := &Process{}
	p.Cmd = exec.Command(os.Args[0])
	p.Cmd.Env = append(os.Environ(), commandEnv+"=1", commandEnv+"_ARGS="+strings.Join(args, "\x1f"))
	p.Cmd.Env = append(p.Cmd.Env, env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	p.Cmd.Stdin = strings.NewReader(input)
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Cmd.ProcessState == nil {
			_ = p.Cmd.Process.Kill()
			_ = p.Cmd.Wait()
		}
	})
	return p
}
