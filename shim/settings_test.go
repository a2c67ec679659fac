package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAnnotations(t *testing.T) {
	s := DefaultSettings()
	err := s.ApplyAnnotations(map[string]string{
		AnnotationSeed: "42", AnnotationEpoch: "2030-01-02T03:04:05Z", AnnotationCPUs: "2",
		AnnotationLog: "/var/lib/lockstep/a.log", "io.kubernetes.cri.container-type": "container",
	})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config
	if c.Seed != 42 || !c.Epoch.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || c.CPUs != 2 || s.Log != "/var/lib/lockstep/a.log" {
		t.Errorf("settings %+v", s)
	}
}

func TestBadAnnotations(t *testing.T) {
	for k, v := range map[string]string{
		AnnotationSeed:  "-1",
		AnnotationEpoch: "yesterday",
		AnnotationCPUs:  "0",
		AnnotationLog:   "relative.log",
		AnnotationLogd:  "localhost:7070",
		AnnotationKey:   "key",
		// Only part of what a trace report needs.
		AnnotationReplica: "r0",
	} {
		s := DefaultSettings()
		err := s.ApplyAnnotations(map[string]string{k: v})
		if err == nil || !strings.Contains(err.Error(), k) && k != AnnotationCPUs {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}

func TestOptionsFile(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"flat.toml":  "seed = 7\nepoch = \"2026-01-01T00:00:00Z\"\nhostname = \"svc\"\n",
		"table.toml": "[lockstep]\nseed = 7\nepoch = \"2026-01-01T00:00:00Z\"\nhostname = \"svc\"\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		s := DefaultSettings()
		if err := s.ApplyOptionsFile(p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.Config.Seed != 7 || s.Config.Hostname != "svc" || s.Config.Epoch.Year() != 2026 {
			t.Errorf("%s: %+v", name, s.Config)
		}
	}
	p := filepath.Join(dir, "typo.toml")
	os.WriteFile(p, []byte("sead = 7\n"), 0o600)
	s := DefaultSettings()
	if err := s.ApplyOptionsFile(p); err == nil || !strings.Contains(err.Error(), `"sead"`) {
		t.Errorf("misspelt key: %v", err)
	}
	if err := s.ApplyOptionsFile(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing options file was accepted")
	}
}
