// Package location owns turning a vault location string (a path,
// file:///path, or s3://host/bucket/prefix) into a blob.Storage, taking S3
// credentials only by reference (environment variables or files).
package location

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/local"
	"github.com/coffre/coffre/internal/repo/blob/s3"
)

// Open opens the storage at loc. With create, a local directory is created
// (it must be missing or empty).
func Open(ctx context.Context, loc string, create bool) (blob.Storage, error) {
	switch {
	case loc == "":
		return nil, hint.With(fmt.Errorf("no vault given"), "pass --vault PATH or set COFFRE_VAULT")
	case strings.HasPrefix(loc, "s3://"):
		cfg, err := s3.ParseURL(loc)
		if err != nil {
			return nil, err
		}
		cfg.AccessKeyID, err = secret("AWS_ACCESS_KEY_ID")
		if err != nil {
			return nil, err
		}
		cfg.SecretAccessKey, err = secret("AWS_SECRET_ACCESS_KEY")
		if err != nil {
			return nil, err
		}
		return s3.Open(ctx, cfg)
	case strings.HasPrefix(loc, "file://"):
		loc = strings.TrimPrefix(loc, "file://")
	case strings.Contains(loc, "://"):
		return nil, hint.With(fmt.Errorf("unsupported vault location %q", loc), "use a directory path, file:///path or s3://host/bucket/prefix")
	}
	if create {
		return local.Create(loc)
	}
	be, err := local.Open(loc)
	if blob.IsNotExist(err) {
		return nil, hint.With(err, "check --vault / COFFRE_VAULT, or create a vault there with `coffre init`")
	}
	return be, err
}

// secret reads NAME from the environment, or from the file named by NAME_FILE.
func secret(name string) (string, error) {
	if v := os.Getenv(name); v != "" {
		return v, nil
	}
	if f := os.Getenv(name + "_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read %s_FILE: %w", name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}
