package logd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	recs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{7}, 300)}
	for _, r := range recs {
		writeFrame(&b, r)
	}
	got, err := readFrames(bytes.NewReader(b.Bytes()), 3)
	if err != nil || len(got) != 3 || string(got[0]) != "one" || len(got[1]) != 0 || !bytes.Equal(got[2], recs[2]) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if _, err := readFrames(bytes.NewReader(b.Bytes()), 2); err == nil {
		t.Error("more frames than allowed were read")
	}
	for cut := 1; cut < b.Len(); cut++ {
		if cut == 4 || cut == 5 { // ends between frames: "one", then the empty one
			continue
		}
		if _, err := readFrames(bytes.NewReader(b.Bytes()[:cut]), 3); err == nil || !strings.Contains(err.Error(), "record frame") {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	var big [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(big[:], maxRecord+1)
	if _, err := readFrames(bytes.NewReader(big[:n]), 1); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("an oversized frame: %v", err)
	}
}

// The entries calls answer the same records as JSON (the default, for curl)
// and in frames (what the client asks for); a truncated framed append is
// refused and changes nothing.
func TestEntriesFramedAndJSON(t *testing.T) {
	c := startLogd(t)
	ctx := context.Background()
	a := newStream(t, c, "svc", key(t, 1))
	if _, err := a.Append(ctx, inputs(5, 0)); err != nil {
		t.Fatal(err)
	}
	framed, err := c.Records(ctx, "svc", 1, 10, 0)
	if err != nil || len(framed) != 4 {
		t.Fatalf("framed: %d records, %v", len(framed), err)
	}
	resp, err := http.Get(c.Base + "/v1/streams/svc/entries?from=1")
	if err != nil {
		t.Fatal(err)
	}
	var js struct{ Records [][]byte }
	err = json.NewDecoder(resp.Body).Decode(&js)
	resp.Body.Close()
	if err != nil || len(js.Records) != 4 {
		t.Fatalf("json: %d records, %v", len(js.Records), err)
	}
	for i := range framed {
		if !bytes.Equal(framed[i], js.Records[i]) {
			t.Errorf("record %d differs between frames and JSON", i+1)
		}
	}

	// A framed append cut in its last record.
	es := inputs(1, 5)
	es[0].Seq = 5
	rec, _ := es[0].Marshal()
	var body bytes.Buffer
	head, _ := json.Marshal(AppendRequest{Expect: 5})
	writeFrame(&body, head)
	writeFrame(&body, rec)
	resp, err = http.Post(c.Base+"/v1/streams/svc/entries", RecordsType, bytes.NewReader(body.Bytes()[:body.Len()-2]))
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, "record frame 1") {
		t.Errorf("a truncated framed append: %d %q", resp.StatusCode, e.Error)
	}
	if info, err := c.Info(ctx, "svc"); err != nil || info.Checkpoint.Size != 5 {
		t.Errorf("after the refused append: size %d, %v", info.Checkpoint.Size, err)
	}
}

// FuzzReadFrames: the frame decoder of the entries calls never panics,
// and what it accepts encodes back to the same bytes.
func FuzzReadFrames(f *testing.F) {
	var b bytes.Buffer
	writeFrame(&b, []byte("one"))
	writeFrame(&b, nil)
	f.Add(b.Bytes())
	f.Add([]byte{0x80})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, err := readFrames(bytes.NewReader(data), MaxBatch+1)
		if err != nil {
			return
		}
		var again bytes.Buffer
		for _, fr := range frames {
			writeFrame(&again, fr)
		}
		if !bytes.Equal(again.Bytes(), data) {
			// A padded uvarint length decodes but is not canonical; the
			// records themselves are checked by DecodeEntry.
			frames2, err := readFrames(bytes.NewReader(again.Bytes()), MaxBatch+1)
			if err != nil || len(frames2) != len(frames) {
				t.Fatalf("re-encoded frames do not decode the same: %v", err)
			}
		}
	})
}
