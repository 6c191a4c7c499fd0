package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/producer"
)

// TestNATSPermissions runs NATS with deploy/nats/auth.conf: a gateway and
// a producer with their users work end to end, a producer cannot
// subscribe to room subjects, and a gateway cannot publish room updates.
func TestNATSPermissions(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude auth.conf\n", filepath.Join(dir, "js"))
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROOMCAST_GATEWAY_NATS_PASSWORD", "gw-secret")
	t.Setenv("ROOMCAST_PRODUCER_NATS_PASSWORD", "prod-secret")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ns := roomtest.StartNATSWith(t, opts)

	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.NATS.User, cfg.NATS.Password, cfg.NATS.InboxPrefix = "gateway", "gw-secret", "_INBOX_gateway"
	g := roomtest.StartGateway(t, cfg)

	pc, err := broker.Connect(broker.ConnConfig{URL: ns.ClientURL(), Name: "producer", Credentials: broker.Credentials{
		User: "producer", Password: "prod-secret", InboxPrefix: "_INBOX_producer"}}, roomtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pc.Close)
	p, err := producer.New(pc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Announce(ctx, catalog.Entry{Room: "sales", Title: catalog.Plain("Sales"), Metrics: []catalog.Metric{{Key: "sales", Label: catalog.Plain("Sales")}}}); err != nil {
		t.Fatalf("producer announce: %v", err)
	}

	// The whole path works with the two users.
	c := roomtest.Dial(t, g)
	c.Join("sales")
	if err := p.Publish("sales", map[string]any{"sales": 1}); err != nil {
		t.Fatal(err)
	}
	if m := c.Expect("update"); !strings.Contains(string(m.Data), `"sales":1`) || m.Seq == 0 {
		t.Fatalf("update %+v", m)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if _, body := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), nil); !strings.Contains(body, `"sales"`) {
			return fmt.Errorf("catalogue %s", body)
		}
		return nil
	})

	// What each user must not do.
	tests := []struct {
		name       string
		user, pass string
		do         func(nc *nats.Conn) error
	}{
		{"producer subscribes to a room", "producer", "prod-secret", func(nc *nats.Conn) error {
			_, err := nc.Subscribe("roomcast.room.sales", func(*nats.Msg) {})
			return err
		}},
		{"producer subscribes to the live subjects", "producer", "prod-secret", func(nc *nats.Conn) error {
			_, err := nc.Subscribe("roomcast.live.>", func(*nats.Msg) {})
			return err
		}},
		{"producer reads others' inboxes", "producer", "prod-secret", func(nc *nats.Conn) error {
			_, err := nc.Subscribe("_INBOX_gateway.>", func(*nats.Msg) {})
			return err
		}},
		{"producer deletes the stream", "producer", "prod-secret", func(nc *nats.Conn) error {
			return nc.Publish("$JS.API.STREAM.DELETE.ROOMCAST", nil)
		}},
		{"gateway publishes to a room", "gateway", "gw-secret", func(nc *nats.Conn) error {
			return nc.Publish("roomcast.room.sales", []byte(`{"sales":666}`))
		}},
		{"gateway publishes to a live subject", "gateway", "gw-secret", func(nc *nats.Conn) error {
			return nc.Publish("roomcast.live.sales", []byte(`{"sales":666}`))
		}},
		{"gateway deletes the stream", "gateway", "gw-secret", func(nc *nats.Conn) error {
			return nc.Publish("$JS.API.STREAM.DELETE.ROOMCAST", nil)
		}},
		{"gateway writes the catalogue", "gateway", "gw-secret", func(nc *nats.Conn) error {
			return nc.Publish("$KV.roomcast_catalog.evil", []byte(`{"title":"x"}`))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var violations []error
			nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(tt.user, tt.pass),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					mu.Lock()
					violations = append(violations, err)
					mu.Unlock()
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := tt.do(nc); err != nil {
				t.Fatal(err)
			}
			roomtest.Eventually(t, 5*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				for _, err := range violations {
					if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
						return nil
					}
				}
				return fmt.Errorf("no permissions violation yet (%v)", violations)
			})
		})
	}
	// Nothing forged reached the client, and the stream is still there.
	if err := p.Publish("sales", map[string]any{"sales": 2}); err != nil {
		t.Fatal(err)
	}
	if m := c.Expect("update"); !strings.Contains(string(m.Data), `"sales":2`) {
		t.Fatalf("after the refused attempts the client got %s", m.Data)
	}
}

// TestNATSCredentials connects a gateway to NATS over TLS with each kind
// of credential and checks an update gets through; wrong credentials never
// connect and say why.
func TestNATSCredentials(t *testing.T) {
	t.Parallel()
	certs := roomtest.TLSCerts(t)
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	userSeed, _ := userKP.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, userSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	credsOpts, credsFile := operatorMode(t)

	tests := []struct {
		name   string
		server *server.Options
		creds  broker.Credentials
	}{
		{"user and password, mutual TLS", &server.Options{Username: "rc", Password: "pw",
			TLSConfig: certs.ServerTLS(t, true), TLSVerify: true},
			broker.Credentials{User: "rc", Password: "pw", CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}},
		{"token, TLS", &server.Options{Authorization: "s3cret-token", TLSConfig: certs.ServerTLS(t, false)},
			broker.Credentials{Token: "s3cret-token", CAFile: certs.CAFile}},
		{"nkey seed file", &server.Options{Nkeys: []*server.NkeyUser{{Nkey: userPub}}},
			broker.Credentials{NKeySeedFile: seedFile}},
		{"creds file (operator mode), TLS", credsOpts(certs.ServerTLS(t, false)),
			broker.Credentials{CredsFile: credsFile, CAFile: certs.CAFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.server.JetStream, tt.server.StoreDir = true, t.TempDir()
			ns := roomtest.StartNATSWith(t, tt.server)
			url := ns.ClientURL()
			if tt.server.TLSConfig != nil {
				url = strings.Replace(url, "nats://", "tls://", 1)
			}
			cfg := roomtest.Config(t, url)
			c := tt.creds
			cfg.NATS.User, cfg.NATS.Password, cfg.NATS.Token = c.User, c.Password, c.Token
			cfg.NATS.NKeySeedFile, cfg.NATS.CredsFile = c.NKeySeedFile, c.CredsFile
			cfg.NATS.TLS.CAFile, cfg.NATS.TLS.CertFile, cfg.NATS.TLS.KeyFile = c.CAFile, c.CertFile, c.KeyFile
			g := roomtest.StartGateway(t, cfg)
			client := roomtest.Dial(t, g)
			client.Join("sales")
			if err := g.NATS().Flush(); err != nil {
				t.Fatal(err)
			}
			pub, err := broker.Connect(broker.ConnConfig{URL: url, Credentials: c}, roomtest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			roomtest.Eventually(t, 5*time.Second, func() error {
				if !pub.IsConnected() {
					return fmt.Errorf("producer not connected: %v", pub.LastError())
				}
				return nil
			})
			if err := pub.Publish("roomcast.room.sales", []byte(`{"v":1}`)); err != nil {
				t.Fatal(err)
			}
			if m := client.Expect("update"); string(m.Data) != `{"v":1}` {
				t.Fatalf("update %s", m.Data)
			}

			// Wrong credentials: never connected, and the reason is kept.
			wrong := c
			switch {
			case c.User != "":
				wrong.Password = "wrong"
			case c.Token != "":
				wrong.Token = "wrong"
			default:
				return
			}
			bad, err := broker.Connect(broker.ConnConfig{URL: url, Credentials: wrong}, roomtest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			roomtest.Eventually(t, 5*time.Second, func() error {
				if err := bad.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
					return fmt.Errorf("last error %v", err)
				}
				return nil
			})
			if bad.IsConnected() {
				t.Fatal("connected with wrong credentials")
			}
		})
	}
}

// operatorMode makes an operator, an account and a user, and returns
// server options trusting the operator and a .creds file for the user.
func operatorMode(t *testing.T) (func(*tls.Config) *server.Options, string) {
	t.Helper()
	opKP, _ := nkeys.CreateOperator()
	opPub, _ := opKP.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	opJWT, err := opClaims.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	op, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	accKP, _ := nkeys.CreateAccount()
	accPub, _ := accKP.PublicKey()
	accClaims := jwt.NewAccountClaims(accPub)
	accClaims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := accClaims.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.IssuerAccount = accPub
	userJWT, err := uc.Encode(accKP)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := userKP.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return func(tc *tls.Config) *server.Options {
		resolver := &server.MemAccResolver{}
		_ = resolver.Store(accPub, accJWT)
		_ = resolver.Store(sysPub, sysJWT)
		return &server.Options{TrustedOperators: []*jwt.OperatorClaims{op}, AccountResolver: resolver,
			SystemAccount: sysPub, TLSConfig: tc}
	}, file
}
