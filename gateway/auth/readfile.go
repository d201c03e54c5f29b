package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// The operator's files (the HMAC secret, keys, the revocation list, the
// admin token) are read at start and again on every reload, from the
// goroutine that handles the signals. A reload that hangs leaves SIGTERM
// unanswered, and one that reads without a bound can fill the memory: a
// key directory holding a named pipe without a writer, or a secret file
// pointed at /dev/zero by mistake, did both. ReadFile reads none of them
// for longer than fileReadTimeout or beyond a bound.

// fileReadTimeout bounds the wait for a named pipe's bytes, such as a
// secret given as <(vault read …).
const fileReadTimeout = 5 * time.Second

// MaxSecretFileBytes bounds a secret or an admin token file (a few dozen
// bytes). Key files are bounded as a JWK set from a URL (maxJWKSBytes),
// the revocation list by MaxRevokedBytes.
const MaxSecretFileBytes = 64 << 10

// ReadFile reads the file at path, at most max bytes of it: a regular
// file, or a named pipe whose writer sends it whole within
// fileReadTimeout. A device, a socket or a directory is refused, and so
// is a regular file over max before it is read. Errors do not repeat the
// path but for those of the file system, which do.
func ReadFile(path string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a named pipe waits for a writer otherwise.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch mode := st.Mode(); {
	case mode.IsRegular():
		if st.Size() > max {
			return nil, fmt.Errorf("%d bytes, more than %d", st.Size(), max)
		}
	case mode&fs.ModeNamedPipe != 0:
		if err := f.SetReadDeadline(time.Now().Add(fileReadTimeout)); err != nil {
			return nil, fmt.Errorf("cannot wait for the named pipe: %w", err)
		}
	case mode.IsDir():
		return nil, errors.New("a directory, not a file")
	case mode&fs.ModeDevice != 0:
		return nil, errors.New("a device, not a regular file")
	default:
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("the named pipe did not end within %s", fileReadTimeout)
	case err != nil:
		return nil, err
	case int64(len(b)) > max:
		return nil, fmt.Errorf("more than %d bytes", max)
	}
	return b, nil
}
