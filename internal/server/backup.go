package server

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldpush/herald/internal/apierr"
)

// checkpointer is a store that can copy itself while it serves (the
// embedded store); PostgreSQL is backed up with its own tools.
type checkpointer interface {
	Checkpoint(dir string) error
}

// dataDirFiles are the data directory's files beside the store that a
// restored node needs: without the admin token it would refuse to start,
// without the secret key the channel credentials would be unreadable.
var dataDirFiles = []string{"admin-token", "secret-key", markerFile}

// backupFunc is the API's backup: nil when the store cannot checkpoint.
func (s *Server) backupFunc() func(context.Context, io.Writer) error {
	if _, ok := s.store.(checkpointer); !ok {
		return nil
	}
	return s.backup
}

// backup writes a tar of the store as of now, plus the data directory's
// own files, to w. The archive restores by unpacking it into an empty data
// directory (herald restore).
func (s *Server) backup(ctx context.Context, w io.Writer) error {
	cp, ok := s.store.(checkpointer)
	if !ok {
		return apierr.BackupUnsupported
	}
	// The checkpoint goes inside the data directory, on its file system,
	// so that it hard-links the store's files rather than copying them.
	tmp, err := os.MkdirTemp(s.cfg.DataDir, ".backup-")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmp)
	snap := filepath.Join(tmp, "store")
	start := time.Now()
	if err := cp.Checkpoint(snap); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	files := 0
	err = filepath.WalkDir(snap, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(snap, path)
		files++
		return addFile(ctx, tw, path, filepath.ToSlash(rel))
	})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	for _, name := range dataDirFiles {
		path := filepath.Join(s.cfg.DataDir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if err := addFile(ctx, tw, path, name); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		files++
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	s.log.Info("backup written", "files", files, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func addFile(ctx context.Context, tw *tar.Writer, path, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, st.Size())
	return err
}
