package broker

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// Listen is host:port for external clients (producers, the nats CLI).
	// Port 0 picks a free port.
	Listen string
	// StoreDir is the JetStream storage directory.
	StoreDir string
	// JetStream enables JetStream; the gateway uses it for the room
	// catalogue (and history).
	JetStream bool
	// ServerName names the server in logs and monitoring.
	ServerName string
	// Users, if any, are the only clients the server accepts, in-process
	// ones included.
	Users []*server.User
}

// StartEmbedded starts a nats-server in this process and waits until it
// accepts connections. The caller owns it and stops it with Shutdown and
// WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as "the default port"
	}
	name := cfg.ServerName
	if name == "" {
		name = "roomcast-embedded"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  cfg.JetStream,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true, // signals belong to the gateway, not to the library
		Users:      cfg.Users,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	logger := &serverLogger{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
	ns.SetLoggerV2(logger, false, false, false)
	ns.Start()
	deadline := time.Now().Add(10 * time.Second)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS on %s: %s", cfg.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS on %s: not ready after 10s", cfg.Listen)
		}
	}
	return ns, nil
}

// serverLogger adapts nats-server's logger to slog. Fatalf does not exit:
// exiting is main's decision; the first fatal message is handed to
// StartEmbedded instead.
type serverLogger struct {
	log   *slog.Logger
	fatal chan string
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "Plaintext passwords detected") {
		// The gateway's generated passwords live only in memory; hashing
		// them would slow every in-process connect for nothing.
		l.log.Debug(msg)
		return
	}
	l.log.Warn(msg)
}
func (l *serverLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any) {}
func (l *serverLogger) Tracef(format string, v ...any) {}
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
