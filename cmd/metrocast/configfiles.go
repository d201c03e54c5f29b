package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/metrocast/metrocast/gateway"
)

// fileKeys are the settings that name files the node reads: config check
// opens each, so that a file the node could not read fails the check
// rather than the start.
var fileKeys = []string{"admin_token_file", "auth_hmac_secret_file", "auth_keys", "auth_revoked_file", "nats_creds", "nats_tls_ca"}

// checkFiles opens and reads every file the settings name (a directory in
// auth_keys: its *.pem and *.json files), then loads the auth keys as the
// node does, so that a short secret or a broken key file fails too. Errors
// name the key and where it was set.
func (c *config) checkFiles() error {
	var errs []error
	fail := func(key string, err error) {
		if from, ok := c.from[key]; ok {
			err = fmt.Errorf("%s: %w (set by %s)", key, err, from)
		} else {
			err = fmt.Errorf("%s: %w", key, err)
		}
		errs = append(errs, err)
	}
	for _, key := range fileKeys {
		for _, path := range c.filesOf(key) {
			if err := readable(path, key == "auth_keys"); err != nil {
				fail(key, err)
			}
		}
	}
	if len(errs) > 0 || c.gw.Insecure {
		return errors.Join(errs...)
	}
	gw := c.gw
	gw.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := gateway.New(gw); err != nil {
		return fmt.Errorf("cannot load the auth keys: %w", err)
	}
	return nil
}

// filesOf returns the paths a file setting names.
func (c *config) filesOf(key string) []string {
	gw := c.gw
	var p string
	switch key {
	case "admin_token_file":
		p = gw.AdminTokenFile
	case "auth_hmac_secret_file":
		p = gw.AuthHMACSecretFile
	case "auth_keys":
		return gw.AuthKeys
	case "auth_revoked_file":
		p = gw.AuthRevokedFile
	case "nats_creds":
		p = c.cluster.Creds
	case "nats_tls_ca":
		p = c.cluster.TLSCA
	default:
		panic("BUG: filesOf(" + key + "): not a file setting")
	}
	if p == "" {
		return nil
	}
	return []string{p}
}

// readable opens path and reads a byte of it; a directory is allowed when
// dirOK, and then each of its *.pem and *.json files must be readable.
func readable(path string, dirOK bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.IsDir() {
		if _, err := f.Read(make([]byte, 1)); err != nil && err != io.EOF {
			return fmt.Errorf("cannot read %s: %w", path, err)
		}
		return nil
	}
	if !dirOK {
		return fmt.Errorf("%s is a directory, not a file", path)
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", path, err)
	}
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".pem" || ext == ".json") {
			if err := readable(filepath.Join(path, e.Name()), false); err != nil {
				return err
			}
		}
	}
	return nil
}
