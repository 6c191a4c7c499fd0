package gateway

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/config"
)

// producerInbox is the reply-subject prefix of producers on the embedded
// server, as in deploy/nats/auth.conf: they may read their own replies
// and nothing else.
const producerInbox = "_INBOX_producer"

// embeddedAuth is who may use the embedded NATS server when auth.mode is
// not none: without it, any local process could subscribe to the room
// subjects and read what the tokens protect. The gateway and the --demo
// producers get passwords generated at each start and never written
// anywhere; a producer of your own connects as "producer" with
// nats.embedded.producer_password, if set.
type embeddedAuth struct {
	users    []*server.User
	gateway  broker.Credentials
	producer broker.Credentials // the in-process (demo) producers'
}

func newEmbeddedAuth(cfg config.Config) embeddedAuth {
	n := cfg.NATS
	// A producer publishes room updates and catalogue entries, and reads
	// only its own replies (deploy/nats/auth.conf's producer). The demo
	// producers may also create the catalogue bucket, since they may
	// announce before the gateway's catalogue watcher has made it.
	producerPerms := func(create bool) *server.Permissions {
		pub := []string{n.SubjectPrefix + ".>", "$KV." + n.CatalogBucket + ".>", "$JS.API.STREAM.INFO.KV_" + n.CatalogBucket}
		if create {
			pub = append(pub, "$JS.API.INFO", "$JS.API.STREAM.CREATE.KV_"+n.CatalogBucket)
		}
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub},
			Subscribe: &server.SubjectPermission{Allow: []string{producerInbox + ".>"}},
		}
	}
	a := embeddedAuth{
		gateway:  broker.Credentials{User: "gateway", Password: secret(), InboxPrefix: n.InboxPrefix},
		producer: broker.Credentials{User: "demo-producer", Password: secret(), InboxPrefix: producerInbox},
	}
	a.users = []*server.User{
		{Username: a.gateway.User, Password: a.gateway.Password}, // in-process, all permissions
		{Username: a.producer.User, Password: a.producer.Password, Permissions: producerPerms(true)},
	}
	if pw := n.Embedded.ProducerPassword; pw != "" {
		a.users = append(a.users, &server.User{Username: "producer", Password: pw, Permissions: producerPerms(false)})
	}
	return a
}

func secret() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
