// Package auth decides who may connect to a gateway and which rooms they
// may join: it takes a JWT from the HTTP request (Authorization header,
// token query parameter or a cookie), verifies it with one configured key,
// and turns its rooms and roles claims into a Grant.
//
// Only one algorithm is accepted, the one the key is for (HS256 for a
// secret, RS256 for an RSA key, ES256 for a P-256 key, EdDSA for an Ed25519
// key), so a token cannot choose how it is checked: "none" and the classic
// RS256-to-HS256 confusion are refused before any signature check.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds a token wherever it comes from; real tokens are a
// few hundred bytes, and the limit keeps a hostile one from costing a
// large parse.
const MaxTokenBytes = 8 << 10

// Reasons a request is refused, used in the error and as the metric label.
const (
	ReasonMissing   = "missing"   // no token anywhere
	ReasonMalformed = "malformed" // not a JWT, bad encoding, bad claims
	ReasonAlgorithm = "algorithm" // alg is not the configured key's
	ReasonSignature = "signature" // signature does not verify
	ReasonExpired   = "expired"   // exp has passed
	ReasonNoExpiry  = "no_expiry" // exp is missing: tokens must expire
	ReasonNotYet    = "not_yet_valid"
	ReasonIssuer    = "issuer"
	ReasonAudience  = "audience"
)

// Error is why a request was refused.
type Error struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "unauthorized: " + e.Reason
	}
	return "unauthorized: " + e.Reason + ": " + e.Detail
}

func refuse(reason, format string, a ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, a...)}
}

// Options configure an Authenticator. Exactly one of Secret and PublicKey
// is set.
type Options struct {
	Secret    []byte           // HS256
	PublicKey crypto.PublicKey // RS256 (RSA), ES256 (P-256) or EdDSA (Ed25519)
	Issuer    string           // if set, iss must equal it
	Audience  string           // if set, aud must contain it
	Leeway    time.Duration    // clock skew allowed on exp and nbf
	// Roles maps a role (the token's roles claim) to room patterns.
	// Role names are compared in lower case.
	Roles map[string][]string
	// Cookie names a cookie that may carry the token; empty: none.
	Cookie string
}

// Authenticator verifies tokens. It is safe for concurrent use.
type Authenticator struct {
	key    any
	alg    string
	parser *jwt.Parser
	roles  map[string][]Pattern
	cookie string
	leeway time.Duration
}

// New checks opts and returns an Authenticator.
func New(opts Options) (*Authenticator, error) {
	a := &Authenticator{cookie: opts.Cookie, leeway: opts.Leeway, roles: map[string][]Pattern{}}
	switch k := opts.PublicKey.(type) {
	case nil:
		if len(opts.Secret) < 32 {
			return nil, errors.New("auth: an HS256 secret must be at least 32 bytes")
		}
		a.key, a.alg = opts.Secret, jwt.SigningMethodHS256.Alg()
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("auth: RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
		a.key, a.alg = k, jwt.SigningMethodRS256.Alg()
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("auth: only P-256 ECDSA keys (ES256) are supported")
		}
		a.key, a.alg = k, jwt.SigningMethodES256.Alg()
	case ed25519.PublicKey:
		a.key, a.alg = k, jwt.SigningMethodEdDSA.Alg()
	default:
		return nil, fmt.Errorf("auth: unsupported public key type %T", opts.PublicKey)
	}
	if opts.PublicKey != nil && len(opts.Secret) > 0 {
		return nil, errors.New("auth: set a secret or a public key, not both")
	}
	for role, list := range opts.Roles {
		ps, err := ParsePatterns(list)
		if err != nil {
			return nil, fmt.Errorf("auth: role %q: %w", role, err)
		}
		a.roles[strings.ToLower(role)] = ps
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{a.alg}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(opts.Leeway),
	}
	if opts.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(opts.Issuer))
	}
	if opts.Audience != "" {
		popts = append(popts, jwt.WithAudience(opts.Audience))
	}
	a.parser = jwt.NewParser(popts...)
	return a, nil
}

// Algorithm is the one algorithm tokens must use.
func (a *Authenticator) Algorithm() string { return a.alg }

// claims are the token's claims that roomcast reads.
type claims struct {
	jwt.RegisteredClaims
	Rooms []string `json:"rooms,omitempty"`
	Roles []string `json:"roles,omitempty"`
}

// Verify checks a token and returns what it grants.
func (a *Authenticator) Verify(token string) (*Grant, error) {
	if len(token) > MaxTokenBytes {
		return nil, refuse(ReasonMalformed, "token longer than %d bytes", MaxTokenBytes)
	}
	var c claims
	_, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		return nil, classify(err)
	}
	g := &Grant{Subject: c.Subject}
	if c.ExpiresAt != nil {
		g.Expires = c.ExpiresAt.Add(a.leeway)
	}
	ps, err := ParsePatterns(c.Rooms)
	if err != nil {
		return nil, refuse(ReasonMalformed, "rooms claim: %v", err)
	}
	g.patterns = ps
	for _, role := range c.Roles {
		g.patterns = append(g.patterns, a.roles[strings.ToLower(role)]...)
	}
	return g, nil
}

// classify maps golang-jwt's errors to a reason.
func classify(err error) *Error {
	detail := err.Error()
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse(ReasonMalformed, "%s", detail)
	case strings.Contains(detail, "signing method"):
		return refuse(ReasonAlgorithm, "%s", detail)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return refuse(ReasonSignature, "%s", detail)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refuse(ReasonNoExpiry, "the token has no exp claim")
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse(ReasonExpired, "the token has expired; fetch a new one")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return refuse(ReasonNotYet, "%s", detail)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refuse(ReasonIssuer, "wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse(ReasonAudience, "wrong audience")
	}
	return refuse(ReasonMalformed, "%s", detail)
}

// Authenticate takes the token from the request and verifies it.
func (a *Authenticator) Authenticate(r *http.Request) (*Grant, error) {
	token, err := TokenFromRequest(r, a.cookie)
	if err != nil {
		return nil, err
	}
	return a.Verify(token)
}

// TokenFromRequest finds the token: the Authorization header (Bearer),
// then the token query parameter (browsers cannot set headers on a
// WebSocket), then the named cookie. A present but unusable header is an
// error rather than a reason to look further, so that a client never gets
// a silent downgrade to another source.
func TokenFromRequest(r *http.Request, cookie string) (string, error) {
	if h := r.Header.Values("Authorization"); len(h) > 0 {
		if len(h) > 1 {
			return "", refuse(ReasonMalformed, "more than one Authorization header")
		}
		scheme, token, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", refuse(ReasonMalformed, "the Authorization header must be \"Bearer <token>\"")
		}
		return checkToken(strings.TrimSpace(token))
	}
	if q := r.URL.Query()["token"]; len(q) > 0 {
		if len(q) > 1 {
			return "", refuse(ReasonMalformed, "more than one token query parameter")
		}
		return checkToken(q[0])
	}
	if cookie != "" {
		if c, err := r.Cookie(cookie); err == nil {
			return checkToken(c.Value)
		}
	}
	return "", refuse(ReasonMissing, "send a token as \"Authorization: Bearer <token>\", the token query parameter or the %s cookie", cookieName(cookie))
}

func cookieName(c string) string {
	if c == "" {
		return "(none configured)"
	}
	return c
}

// checkToken refuses what cannot be a compact JWT before it is parsed.
func checkToken(t string) (string, error) {
	switch {
	case t == "":
		return "", refuse(ReasonMissing, "the token is empty")
	case len(t) > MaxTokenBytes:
		return "", refuse(ReasonMalformed, "token longer than %d bytes", MaxTokenBytes)
	case strings.Count(t, ".") != 2:
		return "", refuse(ReasonMalformed, "a JWT has three dot-separated parts")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '=') {
			return "", refuse(ReasonMalformed, "the token has a character outside base64url")
		}
	}
	return t, nil
}

// ParsePublicKey reads a PEM public key (PKIX "PUBLIC KEY", PKCS#1 "RSA
// PUBLIC KEY", or the key of a "CERTIFICATE").
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
}
