package hub

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"
)

// ID is a party's name: its ed25519 public key, base64url without
// padding (43 characters).
func ID(k ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(k) }

// ParseID is the inverse of ID.
func ParseID(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%q is not a party's ID (43 characters of base64url: an ed25519 public key)", s)
	}
	return ed25519.PublicKey(b), nil
}

// ParseAddr parses a pinned address, ID@HOST:PORT: the party at HOST:PORT
// must present the key ID.
func ParseAddr(s string) (ed25519.PublicKey, string, error) {
	id, addr, ok := strings.Cut(s, "@")
	if !ok || addr == "" {
		return nil, "", fmt.Errorf("%q: want ID@HOST:PORT, the party's key and address (lockstep hub prints its own)", s)
	}
	k, err := ParseID(id)
	return k, addr, err
}

// certificate is a self-signed certificate of key: its only content is
// the public key (TLS proves the peer holds the private one).
func certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	pub := key.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: ID(pub)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerKey is the ed25519 key of a peer's certificate.
func peerKey(raw [][]byte) (ed25519.PublicKey, error) {
	if len(raw) == 0 {
		return nil, errors.New("the peer presented no certificate (every party needs a key: --key)")
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, err
	}
	k, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the peer's certificate holds a %T, not an ed25519 key", c.PublicKey)
	}
	return k, nil
}

// ServerTLS is the TLS of a party that serves: it presents key and takes
// a client only with a certificate whose key accept allows (nil: any
// key; the handler then knows the client by Peer).
func ServerTLS(key ed25519.PrivateKey, accept func(ed25519.PublicKey) error) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := peerKey(raw)
			if err != nil || accept == nil {
				return err
			}
			return accept(k)
		},
	}, nil
}

// ClientTLS is the TLS of a party that connects with key to the party
// whose key is server: any other key at that address is refused.
func ClientTLS(key ed25519.PrivateKey, server ed25519.PublicKey) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The chain is not checked against CAs: the key is pinned below.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := peerKey(raw)
			if err != nil {
				return err
			}
			if !k.Equal(server) {
				return fmt.Errorf("the server presented key %s, not the pinned %s", ID(k), ID(server))
			}
			return nil
		},
	}, nil
}

// HTTPClient is an HTTP client of the party with key server, as key.
func HTTPClient(key ed25519.PrivateKey, server ed25519.PublicKey) (*http.Client, error) {
	cfg, err := ClientTLS(key, server)
	if err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.ForceAttemptHTTP2 = false
	return &http.Client{Transport: t}, nil
}

// Peer is the key of the client of r (served with ServerTLS).
func Peer(r *http.Request) ed25519.PublicKey {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	k, _ := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	return k
}
