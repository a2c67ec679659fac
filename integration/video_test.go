//go:build linux

package integration

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/hack/ociimage"
)

const ffmpegImage = "lockstep.test/ffmpeg:1"

// encode is the re-encoding service: a camera-like stream in (NUT) on
// stdin, H.264 in MPEG-TS out, one encoder thread.
var encode = []string{"/usr/bin/ffmpeg", "-nostdin", "-loglevel", "error", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-threads", "1", "-f", "mpegts", "-"}

// TestHubVideo: the seed's video example. A generated 60-second stream
// (ffmpeg's testsrc, as a camera would send it) goes through a
// registered ffmpeg re-encoding service with three replicas on three
// provider hosts: every replica's output is identical, it equals one
// plain (runc) container's, and the throughput ratio is logged.
func TestHubVideo(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatal("ffmpeg is not installed (apt-get install -y ffmpeg): the video service's image is built from Debian's")
	}
	im := &ociimage.Image{Name: ffmpegImage}
	if err := im.AddBinary("/usr/bin/ffmpeg", "/usr/bin/ffmpeg"); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := im.WriteArchive(&archive); err != nil {
		t.Fatal(err)
	}
	hosts, _, r, register := startHubWorld(t)
	for _, h := range hosts {
		if err := h.containerd.importImage(archive.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	img, err := hosts[0].containerd.client.GetImage(hosts[0].containerd.ctx(), ffmpegImage)
	if err != nil {
		t.Fatal(err)
	}
	register("encode", 3, append([]string{"image=" + ffmpegImage + "@" + img.Target().Digest.String()}, encode...)...)

	src := filepath.Join(t.TempDir(), "camera.nut")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=60:size=320x240:rate=25", "-f", "nut", src).CombinedOutput(); err != nil {
		t.Fatalf("the camera stream: %v: %s", err, out)
	}
	in, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	plain := hosts[0].containerd.run(t, run{image: ffmpegImage, runtime: "io.containerd.runc.v2", args: encode, stdin: string(in)})
	plainTime := time.Since(start)
	if plain.code != 0 || len(plain.stdout) == 0 {
		t.Fatalf("the plain container: exit %d: %s", plain.code, plain.stderr)
	}

	start = time.Now()
	out, errs, code := r.run(t, string(in), "pipe", "--json", "encode")
	hubTime := time.Since(start)
	v := parseHubVerdict(t, errs)
	if code != 0 || !v.Agreed || len(v.Replicas) != 3 {
		t.Fatalf("the stream through lockstep pipe encode: exit %d: %s", code, errs)
	}
	for _, rep := range v.Replicas {
		if rep.State != "agreed" || rep.Bytes != int64(len(out)) {
			t.Errorf("%s on %s: %s, %d bytes of %d", rep.Name, rep.Provider, rep.State, rep.Bytes, len(out))
		}
	}
	if sha256.Sum256([]byte(out)) != sha256.Sum256([]byte(plain.stdout)) {
		t.Errorf("the verified output (%d bytes) differs from the plain container's (%d bytes)", len(out), len(plain.stdout))
	}
	t.Logf("60 s of 320x240 video, %d bytes in, %d bytes of H.264 out: one plain runc container %v, 3 verified replicas through the hub %v: throughput ratio %.2f; replicas: %s",
		len(in), len(out), plainTime.Round(time.Millisecond), hubTime.Round(time.Millisecond), plainTime.Seconds()/hubTime.Seconds(), strings.TrimSpace(states(v.Verdict)))
}
