package producer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxLineBytes is the longest input line PublishLines accepts.
const MaxLineBytes = 1 << 20

// LineResult counts what PublishLines did.
type LineResult struct {
	Published, Skipped int
}

// PublishLines publishes each line of r, one JSON object per line, as an
// update of room. Blank lines are ignored. A line that is not a JSON
// object, is longer than MaxLineBytes or cannot be published is reported
// on errOut with its line number and skipped. It returns at the end of r
// or on a read error.
func PublishLines(r io.Reader, room string, p *Publisher, errOut io.Writer) (LineResult, error) {
	var res LineResult
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for n := 1; ; n++ {
		line = line[:0]
		tooLong := false
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			if !tooLong {
				line = append(line, chunk...)
				if len(line) > MaxLineBytes+1 {
					tooLong, line = true, line[:0]
				}
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return res, fmt.Errorf("read line %d: %w", n, err)
		}
		trimmed := bytes.TrimSpace(line)
		switch {
		case tooLong:
			res.Skipped++
			fmt.Fprintf(errOut, "line %d: longer than %d bytes, skipped\n", n, MaxLineBytes)
		case len(trimmed) == 0:
		default:
			if perr := p.PublishJSON(room, trimmed); perr != nil {
				res.Skipped++
				fmt.Fprintf(errOut, "line %d: %v, skipped\n", n, perr)
			} else {
				res.Published++
			}
		}
		if errors.Is(err, io.EOF) {
			return res, nil
		}
	}
}
