package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrivateKeyFile(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	path := filepath.Join(t.TempDir(), "key")
	if err := WritePrivateKey(path, k); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(path, k); err == nil {
		t.Error("overwrote an existing key file")
	}
	got, err := ReadPrivateKey(path)
	if err != nil || !got.Equal(k) {
		t.Fatalf("read back %v, %v", got, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	os.WriteFile(path+"2", []byte("public "+EncodeKey(k.Public().(ed25519.PublicKey))+"\n"), 0o600)
	if _, err := ReadPrivateKey(path + "2"); err == nil || !strings.Contains(err.Error(), "no private key") {
		t.Errorf("a public key file: %v", err)
	}
}

func TestTraceSignature(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	tr := Trace{Stream: "s", Replica: "r0", Checkpoints: json.RawMessage(`[{"stream":"pid 1 fd 1","digest":"ab"}]`)}
	tr.Sign(k)
	if err := tr.Verify(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Trace){
		"checkpoints": func(t *Trace) { t.Checkpoints = json.RawMessage(`[]`) },
		"replica":     func(t *Trace) { t.Replica = "r1" },
		"stream":      func(t *Trace) { t.Stream = "other" },
	} {
		bad := tr
		edit(&bad)
		if err := bad.Verify(); err == nil {
			t.Errorf("edited %s: signature still verifies", name)
		}
	}
}
