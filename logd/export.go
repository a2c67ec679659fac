package logd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// Export writes stream, from the logd c, in the file form: its entries and
// every signed checkpoint, in order.
func Export(ctx context.Context, c *Client, stream string, w io.Writer) error {
	info, err := c.Info(ctx, stream)
	if err != nil {
		return err
	}
	cps, err := c.Checkpoints(ctx, stream)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	line := func(v any) { b, _ := json.Marshal(v); bw.Write(b); bw.WriteByte('\n') }
	line(FileHeader{Format: FileFormat, Version: FileVersion, Stream: stream, Key: info.Key})
	seq := int64(0)
	for _, cp := range cps {
		for seq < cp.Size {
			recs, err := c.Records(ctx, stream, seq, cp.Size-seq, 0)
			if err != nil || len(recs) == 0 {
				return fmt.Errorf("export %s: entries from %d: %v", stream, seq, err)
			}
			for _, r := range recs {
				line(fileLine{E: r})
			}
			seq += int64(len(recs))
		}
		cp := cp
		line(fileLine{C: &cp})
	}
	return bw.Flush()
}

// Import creates the verified stream v in the logd c, appending its
// entries in the batches its own signed checkpoints bound.
func Import(ctx context.Context, c *Client, v *Verified) error {
	key, err := DecodeKey(v.Header.Key)
	if err != nil {
		return err
	}
	if err := c.Create(ctx, v.Header.Stream, key); err != nil {
		return err
	}
	at := int64(0)
	for _, cp := range v.Checkpoints {
		if cp.Size == at {
			continue
		}
		if _, err := c.Append(ctx, v.Header.Stream, at, v.Records[at:cp.Size], cp); err != nil {
			return fmt.Errorf("import entries %d..%d: %w", at, cp.Size-1, err)
		}
		at = cp.Size
	}
	return nil
}
