package logd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// RecordsType is the media type of records in binary frames: each record
// is its length as a uvarint, then its bytes. The entries calls speak it
// when the client asks (Accept on GET, Content-Type on POST); JSON with
// base64 records stays the default. A record is an encoded entry, so it
// is copied as it is, with no re-encoding: this is the data path of every
// replica.
const RecordsType = "application/vnd.lockstep.records"

// maxRecord bounds one framed record: an entry's header and its payload.
const maxRecord = MaxPayload + 64

func writeFrame(w io.Writer, b []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrames reads frames to EOF; at most max of them, each at most
// maxRecord bytes.
func readFrames(r io.Reader, max int) ([][]byte, error) {
	br := bufio.NewReader(r)
	var out [][]byte
	for {
		n, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("record frame %d: %w", len(out), err)
		}
		if len(out) == max {
			return nil, fmt.Errorf("more than %d record frames", max)
		}
		if n > maxRecord {
			return nil, fmt.Errorf("record frame %d: %d bytes, more than the %d an entry can have", len(out), n, maxRecord)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("record frame %d: %w", len(out), err)
		}
		out = append(out, b)
	}
}
