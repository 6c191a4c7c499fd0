package deploytest

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/roomcast/roomcast/internal/logtest"
	"github.com/roomcast/roomcast/internal/roomtest"
)

// repo is the repository root, relative to this package.
const repo = "../.."

// service is the part of a compose service the topology uses.
type service struct {
	Image       string            `yaml:"image"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

func readCompose(t *testing.T, file string) map[string]service {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return f.Services
}

// addresses maps the compose network's host:port names to loopback ones.
type addresses map[string]string

func (a addresses) replace(s string) string {
	for from, to := range a {
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

// replaceOnce replaces the single match of re in s, failing the test when
// there is not exactly one: a changed config file must break the test,
// not silently run something else.
func replaceOnce(t *testing.T, what, s string, re *regexp.Regexp, repl string) string {
	t.Helper()
	if n := len(re.FindAllStringIndex(s, -1)); n != 1 {
		t.Fatalf("%s: %d matches for %s, want 1", what, n, re)
	}
	return re.ReplaceAllLiteralString(s, repl)
}

// startNATS starts one in-process server per name from
// deploy/nats/nats.conf, with the node's name set the way compose sets it
// (NATS_SERVER_NAME) and its ports and routes on loopback. It returns the
// compose-to-loopback address map of the client ports.
func startNATS(t *testing.T, names []string) (addresses, []*server.Server) {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(repo, "deploy/nats/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	clientPorts, routePorts := map[string]int{}, map[string]int{}
	addrs := addresses{}
	for _, n := range names {
		clientPorts[n], routePorts[n] = roomtest.FreePort(t), roomtest.FreePort(t)
		addrs[n+":4222"] = fmt.Sprintf("127.0.0.1:%d", clientPorts[n])
	}
	var servers []*server.Server
	for _, n := range names {
		text := string(conf)
		text = replaceOnce(t, "nats.conf", text, regexp.MustCompile(`(?m)^port: 4222$`), fmt.Sprintf("port: %d", clientPorts[n]))
		text = replaceOnce(t, "nats.conf", text, regexp.MustCompile(`(?m)^http_port: 8222$`), fmt.Sprintf("http_port: %d", roomtest.FreePort(t)))
		text = replaceOnce(t, "nats.conf", text, regexp.MustCompile(`(?m)^  port: 6222$`), fmt.Sprintf("  port: %d", routePorts[n]))
		text = replaceOnce(t, "nats.conf", text, regexp.MustCompile(`(?m)^  store_dir: /data$`), fmt.Sprintf("  store_dir: %q", t.TempDir()))
		for _, peer := range names {
			text = replaceOnce(t, "nats.conf", text, regexp.MustCompile(`nats://`+peer+`:6222`), fmt.Sprintf("nats://127.0.0.1:%d", routePorts[peer]))
		}
		file := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("NATS_SERVER_NAME", n)
		opts, err := server.ProcessConfigFile(file)
		if err != nil {
			t.Fatalf("deploy/nats/nats.conf for %s: %v", n, err)
		}
		if opts.ServerName != n {
			t.Fatalf("server_name %q, want %q from NATS_SERVER_NAME", opts.ServerName, n)
		}
		opts.Host, opts.Cluster.Host, opts.HTTPHost = "127.0.0.1", "127.0.0.1", "127.0.0.1"
		opts.NoSigs, opts.NoLog = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("NATS %s not ready", n)
		}
		servers = append(servers, s)
	}
	roomtest.Eventually(t, 30*time.Second, func() error {
		for _, s := range servers {
			if !s.JetStreamIsClustered() || s.JetStreamIsLeader() || s.JetStreamIsCurrent() {
				continue
			}
			return fmt.Errorf("%s: JetStream not current", s.Name())
		}
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader")
	})
	return addrs, servers
}

// process is a command the test started; its output is kept for failure
// reports.
type process struct {
	name string
	cmd  *exec.Cmd
	out  logtest.Buffer
	done chan struct{}
}

func (p *process) Write(b []byte) (int, error) { return p.out.Write(b) }

func (p *process) output() string { return p.out.String() }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process at once, as a crash would, and waits for it.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// start runs a command until the test ends; on failure its output is
// logged.
func start(t *testing.T, name string, env []string, path string, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// Ends when the process does: on kill, or at cleanup.
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", name, tail(p.output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// buildBinaries runs deploy/build.sh, the Dockerfile's build, into a
// temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("sh", "deploy/build.sh", out)
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, b)
	}
	return out
}

// haproxyConfig is deploy/haproxy/haproxy.cfg with the bind address on
// loopback and each server-template (which finds replicas through Docker's
// DNS) replaced by one server line per gateway, with the same options
// less the resolver ones.
func haproxyConfig(t *testing.T, listen string, gateways []string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "deploy/haproxy/haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	text := replaceOnce(t, "haproxy.cfg", string(b), regexp.MustCompile(`(?m)^[ \t]*bind :8080$`), "    bind "+listen)
	template := regexp.MustCompile(`(?m)^([ \t]*)server-template (\S+) \d+ gateway:8080 (.*)$`)
	if n := len(template.FindAllString(text, -1)); n != 2 {
		t.Fatalf("haproxy.cfg: %d server-template lines for gateway:8080, want 2 (the gateways and socketio backends)", n)
	}
	return template.ReplaceAllStringFunc(text, func(line string) string {
		m := template.FindStringSubmatch(line)
		opts := strings.NewReplacer(" resolvers docker", "", " init-addr none", "").Replace(m[3])
		var lines []string
		for i, gw := range gateways {
			lines = append(lines, fmt.Sprintf("%sserver %s%d %s %s", m[1], m[2], i+1, gw, opts))
		}
		return strings.Join(lines, "\n")
	})
}

// scrape returns the samples of a /metrics page, summed per series name
// (labels dropped).
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		var v float64
		fmt.Sscan(val, &v)
		out[name] += v
	}
	return out, nil
}
