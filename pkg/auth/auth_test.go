package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/roomcast/roomcast/pkg/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "wall-1", "exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{"sales"}}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerify(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaPEM := pemPublic(t, &rsaKey.PublicKey)

	hs, err := auth.New(auth.Options{Secret: secret, Issuer: "https://login.example", Audience: "roomcast",
		Roles: map[string][]string{"Ops": {"*"}, "eu": {"*-eu"}}})
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := auth.ParsePublicKey(rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := auth.New(auth.Options{PublicKey: rsaPub})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := auth.New(auth.Options{PublicKey: &ecKey.PublicKey})
	ed, _ := auth.New(auth.Options{PublicKey: edPub})

	withIss := func(c jwt.MapClaims) jwt.MapClaims {
		c["iss"], c["aud"] = "https://login.example", []string{"roomcast", "other"}
		return c
	}
	// "none" needs the library's explicit opt-in to even produce.
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, withIss(valid(nil)))
	// The classic confusion: an HS256 token whose "secret" is the RSA public key.
	confused := sign(t, jwt.SigningMethodHS256, rsaPEM, valid(nil))

	tests := []struct {
		name   string
		a      *auth.Authenticator
		token  string
		reason string   // "" = accepted
		allow  []string // rooms the grant must allow
		deny   []string
	}{
		{"hs256 ok", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(nil))), "", []string{"sales"}, []string{"visitors", "sales-eu"}},
		{"hs256 role maps rooms", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"rooms": nil, "roles": []string{"EU"}}))), "", []string{"sales-eu", "ops-eu"}, []string{"sales"}},
		{"role ops sees all", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"roles": []string{"ops"}}))), "", []string{"sales", "anything"}, nil},
		{"unknown role grants nothing", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"rooms": nil, "roles": []string{"cfo"}}))), "", nil, []string{"sales"}},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes......"), withIss(valid(nil))), auth.ReasonSignature, nil, nil},
		{"alg none", hs, noneTok, auth.ReasonAlgorithm, nil, nil},
		{"hs384 refused", hs, sign(t, jwt.SigningMethodHS384, secret, withIss(valid(nil))), auth.ReasonAlgorithm, nil, nil},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}))), auth.ReasonExpired, nil, nil},
		{"no exp", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"exp": nil}))), auth.ReasonNoExpiry, nil, nil},
		{"nbf in future", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()}))), auth.ReasonNotYet, nil, nil},
		{"wrong issuer", hs, sign(t, jwt.SigningMethodHS256, secret, valid(jwt.MapClaims{"iss": "evil", "aud": "roomcast"})), auth.ReasonIssuer, nil, nil},
		{"wrong audience", hs, sign(t, jwt.SigningMethodHS256, secret, valid(jwt.MapClaims{"iss": "https://login.example", "aud": "billing"})), auth.ReasonAudience, nil, nil},
		{"bad rooms pattern", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"rooms": []string{"sales.>"}}))), auth.ReasonMalformed, nil, nil},
		{"rooms not a list", hs, sign(t, jwt.SigningMethodHS256, secret, withIss(valid(jwt.MapClaims{"rooms": 7}))), auth.ReasonMalformed, nil, nil},
		{"garbage", hs, "not.a.jwt", auth.ReasonMalformed, nil, nil},
		{"too long", hs, strings.Repeat("a", auth.MaxTokenBytes+1), auth.ReasonMalformed, nil, nil},
		{"rs256 ok", rs, sign(t, jwt.SigningMethodRS256, rsaKey, valid(nil)), "", []string{"sales"}, nil},
		{"rs256 key, hs256 token (confusion)", rs, confused, auth.ReasonAlgorithm, nil, nil},
		{"rs256 key, alg none", rs, noneTok, auth.ReasonAlgorithm, nil, nil},
		{"rs256 tampered payload", rs, tamper(sign(t, jwt.SigningMethodRS256, rsaKey, valid(nil))), auth.ReasonSignature, nil, nil},
		{"es256 ok", es, sign(t, jwt.SigningMethodES256, ecKey, valid(nil)), "", []string{"sales"}, nil},
		{"es256 key, rs256 token", es, sign(t, jwt.SigningMethodRS256, rsaKey, valid(nil)), auth.ReasonAlgorithm, nil, nil},
		{"eddsa ok", ed, sign(t, jwt.SigningMethodEdDSA, edKey, valid(nil)), "", []string{"sales"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := tt.a.Verify(tt.token)
			if tt.reason != "" {
				var ae *auth.Error
				if !errors.As(err, &ae) || ae.Reason != tt.reason {
					t.Fatalf("err = %v, want reason %q", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if g.Subject != "wall-1" || g.Expires.IsZero() {
				t.Errorf("grant = %+v", g)
			}
			for _, r := range tt.allow {
				if !g.Allows(r) {
					t.Errorf("room %q not allowed", r)
				}
			}
			for _, r := range tt.deny {
				if g.Allows(r) {
					t.Errorf("room %q allowed", r)
				}
			}
		})
	}
}

// tamper flips the payload's sub so the signature no longer matches.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	b = []byte(strings.Replace(string(b), "wall-1", "wall-2", 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestNewRefusesWeakKeys(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, opts := range map[string]auth.Options{
		"short secret":    {Secret: []byte("short")},
		"rsa 1024":        {PublicKey: &small.PublicKey},
		"p-384":           {PublicKey: &p384.PublicKey},
		"secret and key":  {Secret: secret, PublicKey: &p384.PublicKey},
		"bad role":        {Secret: secret, Roles: map[string][]string{"x": {"a.b"}}},
		"empty role room": {Secret: secret, Roles: map[string][]string{"x": {""}}},
	} {
		if _, err := auth.New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"sales", []string{"sales"}, []string{"sales2", "Sales", "sale"}},
		{"sales-*", []string{"sales-", "sales-eu", "sales-eu-1"}, []string{"sales", "xsales-eu"}},
		{"*-eu", []string{"sales-eu", "-eu"}, []string{"sales-us", "eu"}},
		{"*", []string{"a", "sales"}, nil},
		{"a*b*c", []string{"abc", "axxbyyc", "abbc"}, []string{"ab", "acb", "abcx"}},
		{"ab*ba", []string{"abba", "abxba"}, []string{"aba"}},
	}
	for _, tt := range tests {
		p, err := auth.ParsePattern(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range tt.match {
			if !p.Match(r) {
				t.Errorf("%q should match %q", tt.pattern, r)
			}
		}
		for _, r := range tt.nomatch {
			if p.Match(r) {
				t.Errorf("%q should not match %q", tt.pattern, r)
			}
		}
	}
	for _, bad := range []string{"", "sales.>", "sales.*", ">", "a b", strings.Repeat("a", 65), "销售"} {
		if _, err := auth.ParsePattern(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestTokenFromRequest(t *testing.T) {
	const tok = "aaa.bbb.ccc"
	tests := []struct {
		name   string
		setup  func(r *http.Request)
		want   string
		reason string
	}{
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, tok, ""},
		{"bearer any case", func(r *http.Request) { r.Header.Set("Authorization", "bearer "+tok) }, tok, ""},
		{"query", func(r *http.Request) { r.URL.RawQuery = "token=" + tok }, tok, ""},
		{"cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "rc", Value: tok}) }, tok, ""},
		{"header beats query", func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+tok)
			r.URL.RawQuery = "token=x.y.z"
		}, tok, ""},
		{"none", func(r *http.Request) {}, "", auth.ReasonMissing},
		{"other cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: tok}) }, "", auth.ReasonMissing},
		{"basic auth", func(r *http.Request) { r.SetBasicAuth("u", "p") }, "", auth.ReasonMalformed},
		{"bearer without token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer") }, "", auth.ReasonMalformed},
		{"two headers", func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer "+tok)
			r.Header.Add("Authorization", "Bearer "+tok)
		}, "", auth.ReasonMalformed},
		{"two query tokens", func(r *http.Request) { r.URL.RawQuery = "token=a.b.c&token=d.e.f" }, "", auth.ReasonMalformed},
		{"empty query token", func(r *http.Request) { r.URL.RawQuery = "token=" }, "", auth.ReasonMissing},
		{"not three parts", func(r *http.Request) { r.URL.RawQuery = "token=abc" }, "", auth.ReasonMalformed},
		{"bad characters", func(r *http.Request) { r.URL.RawQuery = "token=a%20b.c.d" }, "", auth.ReasonMalformed},
		{"huge", func(r *http.Request) { r.URL.RawQuery = "token=" + strings.Repeat("a", auth.MaxTokenBytes) + ".b.c" }, "", auth.ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws", nil)
			tt.setup(r)
			got, err := auth.TokenFromRequest(r, "rc")
			if tt.reason != "" {
				var ae *auth.Error
				if !errors.As(err, &ae) || ae.Reason != tt.reason {
					t.Fatalf("err = %v, want reason %q", err, tt.reason)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNilGrantAllowsAll(t *testing.T) {
	var g *auth.Grant
	if !g.Allows("sales") {
		t.Fatal("nil grant refused a room")
	}
	if _, ok := g.ExpiresIn(time.Now()); ok {
		t.Fatal("nil grant expires")
	}
}

func TestParsePublicKey(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := auth.ParsePublicKey(pemPublic(t, &ecKey.PublicKey)); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"empty":       nil,
		"not pem":     []byte("hello"),
		"private key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"bad der":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := auth.ParsePublicKey(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
