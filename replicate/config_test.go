package replicate

import (
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/logd"
)

func TestConfigCheckReplay(t *testing.T) {
	c := Config{Image: "img:1", Digest: "sha256:aa", Args: []string{"sh", "-c", "echo 'hi'; date"}}
	for _, tc := range []struct {
		image, digest string
		args          []string
		want          string // "" : accepted
	}{
		{"img:1", "", c.Args, ""},
		{"alias:2", "sha256:aa", c.Args, ""},
		{"img:1", "sha256:bb", c.Args, "img:1 here is sha256:bb, the recorded run's was sha256:aa"},
		{"alias:2", "sha256:bb", c.Args, "recorded for img:1 -- sh -c 'echo '\\''hi'\\''; date', not alias:2"},
		{"img:1", "", nil, "not img:1 (its own command)"},
		{"img:1", "", []string{"sh", "-c", "date"}, "not img:1 -- sh -c date:"},
	} {
		err := c.CheckReplay(tc.image, tc.digest, tc.args)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s %q: %v, want %q", tc.image, tc.digest, tc.args, err, tc.want)
		}
	}
}

func TestReadConfig(t *testing.T) {
	es := []logd.Entry{{Seq: 0, Kind: logd.KindSeed, Payload: make([]byte, 8)}, {Seq: 1, Kind: logd.KindConfig, Payload: []byte(`{"image":"i","port":8080}`)}}
	if c, ok, err := ReadConfig(es); !ok || err != nil || c.Image != "i" || c.Port != 8080 {
		t.Errorf("ReadConfig: %+v %v %v", c, ok, err)
	}
	if _, ok, err := ReadConfig(es[:1]); ok || err != nil {
		t.Errorf("no config entry: %v %v", ok, err)
	}
	es[1].Payload = []byte(`{"port":70000}`)
	if _, _, err := ReadConfig(es); err == nil {
		t.Error("a port out of range was read")
	}
}
