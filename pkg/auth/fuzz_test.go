package auth_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// FuzzTokenFromRequest: whatever the header, query and cookie hold, the
// extraction either refuses with a reason or returns a token of base64url
// characters and dots, at most MaxTokenBytes long; it never panics.
func FuzzTokenFromRequest(f *testing.F) {
	f.Add("Bearer a.b.c", "", "")
	f.Add("", "token=a.b.c", "")
	f.Add("", "", "a.b.c")
	f.Add("Basic dTpw", "token=x", "y")
	f.Add("Bearer  a.b.c ", "token=&token=", "")
	f.Add("bearer\ta.b.c", "token=%zz", "\x00")
	f.Fuzz(func(t *testing.T, header, query, cookie string) {
		r := httptest.NewRequest("GET", "/ws", nil)
		if header != "" {
			r.Header["Authorization"] = []string{header}
		}
		r.URL.RawQuery = query
		if cookie != "" {
			r.Header["Cookie"] = []string{"rc=" + cookie}
		}
		tok, err := auth.TokenFromRequest(r, "rc")
		if err != nil {
			if _, ok := err.(*auth.Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(tok) == 0 || len(tok) > auth.MaxTokenBytes || strings.Count(tok, ".") != 2 {
			t.Fatalf("bad token accepted: %q", tok)
		}
		if strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=") != "" {
			t.Fatalf("token with other characters: %q", tok)
		}
	})
}

// FuzzVerify: arbitrary tokens and claim sets never panic and are never
// accepted without the key, and a token signed with the key is accepted
// exactly when its rooms claim is valid.
func FuzzVerify(f *testing.F) {
	a, err := auth.New(auth.Options{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("eyJhbGciOiJub25lIn0.e30.", "sales")
	f.Add("a.b.c", "sales-*")
	f.Add("", "*")
	f.Add("..", "a.b")
	f.Fuzz(func(t *testing.T, token, room string) {
		if g, err := a.Verify(token); err == nil {
			t.Fatalf("a random token was accepted: %q -> %+v", token, g)
		}
		signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{room},
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		g, err := a.Verify(signed)
		_, perr := auth.ParsePattern(room)
		if (err == nil) != (perr == nil) {
			t.Fatalf("room pattern %q: verify err %v, pattern err %v", room, err, perr)
		}
		if err == nil && !strings.Contains(room, "*") && !g.Allows(room) {
			t.Fatalf("grant for %q does not allow it", room)
		}
	})
}

// FuzzPattern: a pattern never matches a string that is not a valid room
// name, so a grant can never let a NATS wildcard through.
func FuzzPattern(f *testing.F) {
	f.Add("sales-*", "sales-eu")
	f.Add("*", "a.b")
	f.Add("a*b*c", "a>b c")
	f.Fuzz(func(t *testing.T, pattern, room string) {
		p, err := auth.ParsePattern(pattern)
		if err != nil {
			return
		}
		if p.Match(room) && !protocol.ValidRoom(room) {
			t.Fatalf("pattern %q matched %q", pattern, room)
		}
	})
}
