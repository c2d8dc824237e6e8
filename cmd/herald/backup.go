package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldpush/herald/client"
)

// backupCmd fetches a backup of a running node's embedded store (GET
// /v1/admin/backup) into a tar file.
func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	fs := newFlags("backup", stderr)
	c.register(fs, adminFlag)
	out := fs.String("o", "", "the file to write (default herald-backup-DATE.tar in the current directory)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if len(c.args) != 0 {
		return errors.New("usage: herald backup [-o FILE] [--server URL] [--admin-token TOKEN]")
	}
	token, err := c.admin()
	if err != nil {
		return err
	}
	name := *out
	if name == "" {
		name = "herald-backup-" + time.Now().UTC().Format("20060102-150405") + ".tar"
	}
	req, err := http.NewRequestWithContext(ctx, "GET", c.server+"/v1/admin/backup", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var env struct {
			Error *client.Error `json:"error"`
		}
		if json.NewDecoder(resp.Body).Decode(&env) == nil && env.Error != nil {
			env.Error.Status = resp.StatusCode
			return env.Error
		}
		return fmt.Errorf("backup: %s", resp.Status)
	}
	tmp := name + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: the archive did not arrive whole: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s (%d bytes)\n", name, n)
	return nil
}

// admin returns the admin token: the flag or HERALD_ADMIN_TOKEN, else the
// local data directory's.
func (c *clientFlags) admin() (string, error) {
	if c.adminToken != "" {
		return c.adminToken, nil
	}
	b, err := os.ReadFile(filepath.Join(c.dataDir, "admin-token"))
	if err != nil {
		return "", errors.New("give --admin-token (or HERALD_ADMIN_TOKEN); none found in the data directory")
	}
	return strings.TrimSpace(string(b)), nil
}

// restoreCmd unpacks a backup into a new data directory, which a node then
// serves from (herald serve --data DIR).
func restoreCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr)
	data := fs.String("data", "", "the data directory to create (it must not exist or be empty)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *data == "" {
		return errors.New("usage: herald restore --data DIR BACKUP.tar")
	}
	if entries, err := os.ReadDir(*data); err == nil && len(entries) > 0 {
		return fmt.Errorf("restore: %s is not empty: restore into a new directory, then point --data at it", *data)
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	files := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("restore: %s is not a whole backup: %w", fs.Arg(0), err)
		}
		// Only plain files, directly in the directory: a backup holds
		// nothing else, and a crafted archive must not write elsewhere.
		if hdr.Typeflag != tar.TypeReg || hdr.Name != path.Base(hdr.Name) || hdr.Name == "." || hdr.Name == ".." {
			return fmt.Errorf("restore: unexpected entry %q in the backup", hdr.Name)
		}
		out, err := os.OpenFile(filepath.Join(*data, hdr.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		files++
	}
	fmt.Fprintf(stdout, "restored %d files into %s; start it with: herald serve --data %s\n", files, *data, *data)
	return ctx.Err()
}
