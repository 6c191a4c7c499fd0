package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// HistoryConfig describes the JetStream stream that gives room updates
// their sequence numbers and keeps each room's recent history.
type HistoryConfig struct {
	Stream        string        // stream name
	SubjectPrefix string        // producers publish on <SubjectPrefix>.<room>
	LivePrefix    string        // the stream republishes on <LivePrefix>.<room>
	Depth         int           // updates a resume can get back per room
	MaxAge        time.Duration // oldest update kept
	Replicas      int
}

// ErrNoJetStream says the NATS server has no JetStream.
var ErrNoJetStream = errors.New("NATS has no JetStream")

func (c HistoryConfig) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "roomcast room updates: sequence numbers and recent history per room",
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		// One more than Depth: the update before the oldest a client can
		// get back stays stored, so that a client exactly Depth updates
		// behind is known to miss nothing.
		MaxMsgsPerSubject: int64(c.Depth) + 1,
		MaxAge:            c.MaxAge,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		// The live path: one core subscription per room per gateway on the
		// republished subject, whose headers carry the stream sequence and
		// the room's previous sequence.
		RePublish: &jetstream.RePublish{Source: c.SubjectPrefix + ".>", Destination: c.LivePrefix + ".>"},
	}
}

// EnsureStream creates the history stream, or checks an existing one and
// updates it where it differs from cfg (logging what changed). It returns
// ErrNoJetStream when the server has no JetStream.
func EnsureStream(ctx context.Context, nc *nats.Conn, cfg HistoryConfig, log *slog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	want := cfg.streamConfig()
	s, err := js.Stream(ctx, cfg.Stream)
	switch {
	case IsNoJetStream(err):
		return ErrNoJetStream
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err = js.CreateStream(ctx, want); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create history stream %s: %w", cfg.Stream, err)
		}
		log.Info("history stream created", "stream", cfg.Stream, "subjects", want.Subjects[0], "depth", cfg.Depth, "max_age", cfg.MaxAge, "replicas", cfg.Replicas)
		return nil
	case err != nil:
		return fmt.Errorf("check history stream %s: %w", cfg.Stream, err)
	}
	have := s.CachedInfo().Config
	if slices.Equal(have.Subjects, want.Subjects) && have.RePublish != nil && *have.RePublish == *want.RePublish &&
		have.MaxMsgsPerSubject == want.MaxMsgsPerSubject && have.MaxAge == want.MaxAge &&
		have.AllowDirect && have.Replicas == want.Replicas {
		return nil
	}
	// Keep what the operator may have tuned that we do not care about.
	upd := have
	upd.Subjects, upd.RePublish = want.Subjects, want.RePublish
	upd.MaxMsgsPerSubject, upd.MaxAge, upd.AllowDirect, upd.Replicas = want.MaxMsgsPerSubject, want.MaxAge, true, want.Replicas
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("update history stream %s to the configured history settings: %w", cfg.Stream, err)
	}
	log.Warn("history stream updated to this gateway's settings", "stream", cfg.Stream, "depth", cfg.Depth, "max_age", cfg.MaxAge, "replicas", cfg.Replicas)
	return nil
}

// IsNoJetStream reports whether err says the server has no JetStream (or
// nothing answers the JetStream API).
func IsNoJetStream(err error) bool {
	return errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders)
}

// Msg is one stored room update.
type Msg struct {
	Seq, Prev uint64
	Data      []byte
	Time      time.Time // when the stream stored it (zero if unknown)
}

// History reads room history from the stream.
type History struct {
	nc  *nats.Conn
	cfg HistoryConfig
}

// NewHistory returns a reader of the stream cfg describes.
func NewHistory(nc *nats.Conn, cfg HistoryConfig) *History { return &History{nc: nc, cfg: cfg} }

// ErrNotFound is returned by the stream for a message it does not have.
var errNotFound = errors.New("message not found")

type storedMsg struct {
	Subject string    `json:"subject"`
	Seq     uint64    `json:"seq"`
	Data    []byte    `json:"data"` // base64 in JSON; []byte decodes it
	Time    time.Time `json:"time"`
}

// get asks the stream leader for one message. Unlike a direct get, which
// any replica may answer, the leader is never behind what has been
// republished, so a replay never stops short of the live stream.
func (h *History) get(ctx context.Context, req map[string]any) (storedMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return storedMsg{}, err
	}
	resp, err := h.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+h.cfg.Stream, body)
	if err != nil {
		return storedMsg{}, err
	}
	var r struct {
		Message *storedMsg `json:"message"`
		Error   *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return storedMsg{}, fmt.Errorf("stream message get: %w", err)
	}
	if r.Error != nil {
		if r.Error.Code == 404 {
			return storedMsg{}, errNotFound
		}
		return storedMsg{}, fmt.Errorf("stream message get: %s", r.Error.Description)
	}
	if r.Message == nil {
		return storedMsg{}, errors.New("stream message get: empty response")
	}
	return *r.Message, nil
}

func (h *History) subject(room string) (string, error) {
	if err := protocol.CheckRoom(room); err != nil {
		return "", err
	}
	return h.cfg.SubjectPrefix + "." + room, nil
}

// Latest returns the room's newest stored update with a seq below before
// (before 0: the newest of all), and the sequence of the stored update
// before it (0 if none). found is false when there is none. The hub walks
// back with before when the newest is a payload it would not forward.
func (h *History) Latest(ctx context.Context, room string, before uint64) (m Msg, found bool, err error) {
	subj, err := h.subject(room)
	if err != nil {
		return Msg{}, false, err
	}
	var last storedMsg
	if before == 0 {
		last, err = h.get(ctx, map[string]any{"last_by_subj": subj})
	} else if before > 1 {
		var msgs []Msg
		msgs, err = h.direct(ctx, map[string]any{"multi_last": []string{subj}, "up_to_seq": before - 1, "batch": 1})
		if err == nil && len(msgs) == 0 {
			err = errNotFound
		}
		if err == nil {
			last = storedMsg{Subject: subj, Seq: msgs[0].Seq, Data: msgs[0].Data, Time: msgs[0].Time}
		}
	} else {
		err = errNotFound
	}
	if errors.Is(err, errNotFound) {
		return Msg{}, false, nil
	}
	if err != nil {
		return Msg{}, false, err
	}
	prev, err := h.prevOf(ctx, subj, last.Seq)
	if err != nil {
		return Msg{}, false, err
	}
	return Msg{Seq: last.Seq, Prev: prev, Data: last.Data, Time: last.Time}, true, nil
}

// prevOf finds the sequence of the last message of subj before seq, with a
// direct multi-last get bounded by up_to_seq (the leader API has no such
// query). A replica that is behind may answer with an older one; prev of a
// snapshot is informational, so that is acceptable.
func (h *History) prevOf(ctx context.Context, subj string, seq uint64) (uint64, error) {
	if seq <= 1 {
		return 0, nil
	}
	msgs, err := h.direct(ctx, map[string]any{"multi_last": []string{subj}, "up_to_seq": seq - 1, "batch": 1})
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	return msgs[0].Seq, nil
}

// maxBatchBytes bounds the payload bytes of one batched read.
const maxBatchBytes = 4 << 20

// From returns the room's stored updates with seq >= from, oldest first,
// at most limit of them, in one batched request. Prev is left 0: the
// caller knows what came before. A first message with a seq above from
// means from itself is not stored (aged out, or from another history).
//
// Any replica may answer a direct get, so a follower that is behind can
// return fewer messages than the leader has; the hub reads on from the
// last one it got.
func (h *History) From(ctx context.Context, room string, from uint64, limit int) ([]Msg, error) {
	subj, err := h.subject(room)
	if err != nil {
		return nil, err
	}
	if from == 0 {
		from = 1
	}
	return h.direct(ctx, map[string]any{"seq": from, "next_by_subj": subj, "batch": limit, "max_bytes": maxBatchBytes})
}

// Since returns the room's stored updates stored at or after t, oldest
// first, at most limit of them, in one batched request; Prev is left 0.
func (h *History) Since(ctx context.Context, room string, t time.Time, limit int) ([]Msg, error) {
	subj, err := h.subject(room)
	if err != nil {
		return nil, err
	}
	return h.direct(ctx, map[string]any{"start_time": t.UTC(), "next_by_subj": subj, "batch": limit, "max_bytes": maxBatchBytes})
}

// direct runs one batched direct get and collects its messages until the
// end-of-batch status (or a 404: none).
func (h *History) direct(ctx context.Context, req map[string]any) ([]Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	inbox := h.nc.NewRespInbox()
	sub, err := h.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.nc.PublishRequest("$JS.API.DIRECT.GET."+h.cfg.Stream, inbox, body); err != nil {
		return nil, err
	}
	var msgs []Msg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("direct get: %w", err)
		}
		switch st := m.Header.Get("Status"); st {
		case "":
		case "204", "404":
			return msgs, nil // end of batch, or nothing stored
		default:
			return nil, fmt.Errorf("direct get: status %s %s", st, m.Header.Get("Description"))
		}
		s, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("direct get: bad Nats-Sequence %q", m.Header.Get("Nats-Sequence"))
		}
		ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		msgs = append(msgs, Msg{Seq: s, Data: m.Data, Time: ts})
	}
}
