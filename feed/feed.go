package feed

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Kinds of frames. From the provider: an entry of the stream. From the
// agent: Wait (Time is the deadline), Consumed (Seq is the number of
// entries taken), and a served connection's response bytes and end.
// The payload of Open, Data, Close, Response and Finished starts with the
// connection's number, 8 bytes big-endian (logd.ConnID).
const (
	Input    byte = 'i' // input bytes, stamped with their arrival time
	EOF      byte = 'e' // the input closed (the program's stdin ends)
	Tick     byte = 't' // the log's clock reached Time
	End      byte = 'z' // the stream ended: no entry follows
	Open     byte = 'o' // a client connected
	Data     byte = 'd' // bytes the client sent
	Close    byte = 'x' // the client closed its side
	Stop     byte = 's' // the run stops (logd.KindStop)
	Wait     byte = 'w'
	Consumed byte = 'c'
	Response byte = 'r' // bytes the service sent on a connection
	Finished byte = 'f' // the service closed a connection: no more bytes
	// Dial asks the guard to connect out of the run (egress): the payload
	// is the connection's number (logd.EgressConn set), then the address
	// (host:port) the program connected to.
	Dial byte = 'a'
)

// MaxPayload bounds a frame's payload: a log entry's (1 MiB) and a
// connection's number.
const MaxPayload = 1<<20 + 8

// Frame is one message.
type Frame struct {
	Kind    byte
	Seq     int64 // the entry's sequence number in its stream
	Time    int64 // Unix ns
	Payload []byte
}

// Write writes f to w.
func Write(w io.Writer, f Frame) error {
	b := make([]byte, 21, 21+len(f.Payload))
	b[0] = f.Kind
	binary.BigEndian.PutUint64(b[1:], uint64(f.Seq))
	binary.BigEndian.PutUint64(b[9:], uint64(f.Time))
	binary.BigEndian.PutUint32(b[17:], uint32(len(f.Payload)))
	_, err := w.Write(append(b, f.Payload...))
	return err
}

// Read reads the next frame from r.
func Read(r *bufio.Reader) (Frame, error) {
	var h [21]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Kind: h[0], Seq: int64(binary.BigEndian.Uint64(h[1:])), Time: int64(binary.BigEndian.Uint64(h[9:]))}
	switch f.Kind {
	case Input, EOF, Tick, End, Open, Data, Close, Stop, Wait, Consumed, Response, Finished, Dial:
	default:
		return Frame{}, fmt.Errorf("feed: unknown frame kind %q", f.Kind)
	}
	n := binary.BigEndian.Uint32(h[17:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("feed: a frame of %d bytes (at most %d)", n, MaxPayload)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("feed: a truncated frame: %w", err)
	}
	return f, nil
}
