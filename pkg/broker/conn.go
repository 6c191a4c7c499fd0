package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ConnConfig says where and how to connect.
type ConnConfig struct {
	// URL is a comma-separated server list. Empty means Embedded.
	URL string
	// Embedded is the in-process server to use when URL is empty.
	Embedded *server.Server
	// Name identifies the connection in NATS monitoring.
	Name string
	// Credentials and TLS for an external server.
	Credentials Credentials
}

// Credentials authenticate to NATS: at most one of user and password,
// token, nkey seed file and creds file; and TLS: a CA to trust and a
// client certificate.
type Credentials struct {
	User, Password string
	Token          string
	NKeySeedFile   string
	CredsFile      string
	CAFile         string
	CertFile       string
	KeyFile        string
	// InboxPrefix replaces _INBOX in reply subjects; empty keeps _INBOX.
	InboxPrefix string
}

// options turns the credentials into nats.go options; files are read here
// so that a bad one stops start-up with its name.
func (c Credentials) options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.InboxPrefix != "" && c.InboxPrefix != nats.InboxPrefix[:len(nats.InboxPrefix)-1] {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %q: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, fmt.Errorf("creds file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// Connect opens the NATS connection. With a URL it reconnects forever,
// with jitter, and keeps retrying an initial connection that fails, so a
// gateway started before its NATS cluster becomes ready by itself; nats.go
// restores every subscription after a reconnect. Connection events are
// logged at warn (lost) and info (restored).
func Connect(cfg ConnConfig, log *slog.Logger) (*nats.Conn, error) {
	server := func(nc *nats.Conn) string {
		if cfg.URL == "" {
			return "embedded (in-process)"
		}
		return nc.ConnectedUrlRedacted()
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		// Notice a dead server within about 30 s even without traffic.
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", "server", server(nc))
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "server", server(nc))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("NATS subscription error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("NATS error", "err", err)
		}),
	}
	creds, err := cfg.Credentials.options()
	if err != nil {
		return nil, fmt.Errorf("NATS credentials: %w", err)
	}
	opts = append(opts, creds...)
	url := cfg.URL
	if url == "" {
		if cfg.Embedded == nil {
			return nil, errors.New("broker: no NATS URL and no embedded server")
		}
		opts = append(opts, nats.InProcessServer(cfg.Embedded))
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %q: %w", url, err)
	}
	return nc, nil
}

// Drain drains nc (subscriptions first, then pending publishes) and waits
// until it is closed or ctx ends, in which case it closes nc at once.
func Drain(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain NATS: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsClosed() {
		select {
		case <-ctx.Done():
			nc.Close()
			return fmt.Errorf("drain NATS: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
