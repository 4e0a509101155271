package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/blob/blobtest"
)

// testConfig returns the config of the test bucket from the environment that
// scripts/services.sh writes. Without it the test is skipped, unless CI is
// set: a skipped backend in CI is a failure.
func testConfig(t *testing.T) Config {
	t.Helper()
	endpoint := os.Getenv("COFFRE_TEST_S3_ENDPOINT")
	if endpoint == "" {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci || os.Getenv("COFFRE_TEST_REQUIRE_SERVICES") != "" {
			t.Fatal("COFFRE_TEST_S3_ENDPOINT is not set in CI: run scripts/services.sh start ENVFILE and load ENVFILE")
		}
		t.Skip("COFFRE_TEST_S3_ENDPOINT not set; run scripts/services.sh start ENVFILE and load ENVFILE")
	}
	cfg := Config{
		Endpoint:        endpoint,
		Region:          os.Getenv("COFFRE_TEST_S3_REGION"),
		Bucket:          os.Getenv("COFFRE_TEST_S3_BUCKET"),
		AccessKeyID:     os.Getenv("COFFRE_TEST_S3_ACCESS_KEY"),
		SecretAccessKey: os.Getenv("COFFRE_TEST_S3_SECRET_KEY"),
		PathStyle:       true,
	}
	if cfg.Bucket == "" || cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		t.Fatal("COFFRE_TEST_S3_ENDPOINT is set but COFFRE_TEST_S3_BUCKET, _ACCESS_KEY or _SECRET_KEY is not")
	}
	return cfg
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// openFresh opens the test bucket under a fresh random prefix and removes
// everything under that prefix when the test ends.
func openFresh(t *testing.T, mod func(*Config)) *Storage {
	t.Helper()
	cfg := testConfig(t)
	cfg.Prefix = "coffre-test/" + randomHex(t, 8)
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, key := range rawKeys(t, s) {
			if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + key)}); err != nil {
				t.Errorf("cleanup: delete %s: %v", key, err)
			}
		}
		_ = s.Close()
	})
	return s
}

// rawKeys lists every object key under the storage's prefix, without it.
func rawKeys(t *testing.T, s *Storage) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list raw keys: %v", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), s.prefix))
		}
	}
	sort.Strings(keys)
	return keys
}

func mustSave(t *testing.T, s blob.Storage, h blob.Handle, data []byte) {
	t.Helper()
	if err := s.Save(t.Context(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
		err  string
	}{
		{in: "s3://s3.example.com/bucket", want: Config{Endpoint: "https://s3.example.com", Bucket: "bucket"}},
		{in: "s3://s3.example.com/bucket/", want: Config{Endpoint: "https://s3.example.com", Bucket: "bucket"}},
		{in: "s3://127.0.0.1:9000/bucket/some/prefix/?region=eu-west-3&path-style=true&insecure=true",
			want: Config{Endpoint: "http://127.0.0.1:9000", Region: "eu-west-3", Bucket: "bucket", Prefix: "some/prefix", PathStyle: true}},
		{in: "s3://host:443/b/p?insecure=false&path-style=false", want: Config{Endpoint: "https://host:443", Bucket: "b", Prefix: "p"}},
		{in: "s3://[::1]:9000/b?insecure=1", want: Config{Endpoint: "http://[::1]:9000", Bucket: "b"}},
		{in: "https://host/bucket", err: "scheme"},
		{in: "s3:///bucket", err: "missing host"},
		{in: "s3://host", err: "missing bucket"},
		{in: "s3://host/", err: "missing bucket"},
		{in: "s3://host/b/a//c", err: "invalid prefix"},
		{in: "s3://host/b/a/../c", err: "invalid prefix"},
		{in: "s3://host/b?path-style=yes", err: "path-style"},
		{in: "s3://host/b?insecure=maybe", err: "insecure"},
		{in: "s3://host/b?regoin=x", err: "unknown parameter"},
		{in: "s3://host/b?region=a&region=b", err: "given 2 times"},
		{in: "s3://AKID:topsecret@host/b", err: "credentials must not be part of the URL"},
	} {
		got, err := ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseURL(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "topsecret") {
				t.Errorf("ParseURL(%q): error shows the secret: %v", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestOpenWrongCredentials(t *testing.T) {
	cfg := testConfig(t)
	cfg.SecretAccessKey = "wrong-" + randomHex(t, 16)
	s, err := Open(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Open with a wrong secret key succeeded")
	}
	msg := err.Error()
	t.Logf("error: %v", msg)
	for _, want := range []string{cfg.Endpoint, strconv.Quote(cfg.Bucket), "access denied", "secret key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, cfg.SecretAccessKey) {
		t.Errorf("error shows the secret key: %q", msg)
	}

	cfg = testConfig(t)
	cfg.AccessKeyID = "nosuchkey" + randomHex(t, 4)
	if s, err := Open(t.Context(), cfg); err == nil {
		s.Close()
		t.Fatal("Open with an unknown access key succeeded")
	} else if !strings.Contains(err.Error(), "access denied") {
		t.Errorf("unknown access key: error %q does not say access denied", err)
	}

	cfg = testConfig(t)
	cfg.SecretAccessKey = ""
	if _, err := Open(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "secret access key") {
		t.Errorf("Open with access key but no secret: %v", err)
	}
}

func TestOpenMissingBucket(t *testing.T) {
	cfg := testConfig(t)
	cfg.Bucket = "coffre-missing-" + randomHex(t, 6)
	s, err := Open(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Open of a missing bucket succeeded")
	}
	msg := err.Error()
	t.Logf("error: %v", msg)
	for _, want := range []string{cfg.Endpoint, strconv.Quote(cfg.Bucket), "does not exist"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

func TestOpenInvalidConfig(t *testing.T) {
	ctx := t.Context()
	for _, cfg := range []Config{
		{Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", SecretAccessKey: "b"},
		{Endpoint: "ftp://127.0.0.1:1", Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b"},
		{Endpoint: "http://127.0.0.1:1", Bucket: "b", Prefix: "a/../b", AccessKeyID: "a", SecretAccessKey: "b"},
		{Endpoint: "http://127.0.0.1:1", Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b", StorageClass: map[blob.Kind]string{"pack": "X"}},
	} {
		if s, err := Open(ctx, cfg); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

func TestKeyLayout(t *testing.T) {
	s := openFresh(t, nil)
	handles := []blob.Handle{
		{Kind: blob.KindConfig, Name: "config"},
		{Kind: blob.KindKey, Name: "k1"},
		{Kind: blob.KindData, Name: "abcdef"},
		{Kind: blob.KindTree, Name: "0123ff"},
		{Kind: blob.KindIndex, Name: "1111"},
		{Kind: blob.KindSnapshot, Name: "2222"},
		{Kind: blob.KindLock, Name: "3333"},
	}
	for _, h := range handles {
		mustSave(t, s, h, []byte(h.String()))
	}
	want := []string{"config", "data/ab/abcdef", "index/1111", "keys/k1", "locks/3333", "snapshots/2222", "tree/01/0123ff"}
	if got := rawKeys(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("keys = %q, want %q", got, want)
	}
	if !strings.HasPrefix(s.Location(), "s3:") || !strings.Contains(s.Location(), s.bucket) || strings.Contains(s.Location(), os.Getenv("COFFRE_TEST_S3_SECRET_KEY")) {
		t.Errorf("Location() = %q", s.Location())
	}
	// Files of other kinds or foreign objects under a kind's prefix are not listed.
	for _, key := range []string{"configx", "data/abcdef", "data/zz/abcdef", "locks/.tmp"} {
		if _, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + key), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range handles {
		var names []string
		if err := s.List(t.Context(), h.Kind, func(fi blob.FileInfo) error {
			names = append(names, fi.Name)
			if fi.Size != int64(len(h.String())) || fi.ModTime.IsZero() {
				t.Errorf("list %s: %+v", h.Kind, fi)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(names, []string{h.Name}) {
			t.Errorf("list %s = %q, want [%s]", h.Kind, names, h.Name)
		}
	}
}

func TestConformance(t *testing.T) {
	testConfig(t) // skip or fail before the suite starts
	blobtest.Run(t, func(t *testing.T) blob.Storage { return openFresh(t, nil) })
}

// TestContentMD5 checks that the server verifies Content-MD5, which Save sends
// to detect corruption in transit.
func TestContentMD5(t *testing.T) {
	s := openFresh(t, nil)
	_, err := s.client.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket:     aws.String(s.bucket),
		Key:        aws.String(s.key(blob.Handle{Kind: blob.KindData, Name: "00cc"})),
		Body:       strings.NewReader("corrupted in transit"),
		ContentMD5: aws.String("1B2M2Y8AsgTpgAmY7PhCfg=="), // MD5 of ""
	})
	if err == nil {
		t.Fatal("server accepted a body that does not match its Content-MD5")
	}
	t.Logf("server rejects a wrong Content-MD5: %v", err)
	if _, err := s.Stat(t.Context(), blob.Handle{Kind: blob.KindData, Name: "00cc"}); !blob.IsNotExist(err) {
		t.Errorf("stat after rejected put: %v", err)
	}
}

func headClass(t *testing.T, s *Storage, h blob.Handle) string {
	t.Helper()
	out, err := s.head(t.Context(), h)
	if err != nil {
		t.Fatal(err)
	}
	return string(out.StorageClass)
}

func TestSetStorageClass(t *testing.T) {
	s := openFresh(t, nil)
	ctx := t.Context()
	var _ blob.StorageClass = s

	h := blob.Handle{Kind: blob.KindData, Name: "00dd"}
	data := []byte("cold data")
	mustSave(t, s, h, data)
	t.Logf("storage class after save: %q", headClass(t, s, h))

	if err := s.SetStorageClass(ctx, blob.Handle{Kind: blob.KindData, Name: "00ee"}, "STANDARD_IA"); !blob.IsNotExist(err) {
		t.Errorf("set class of missing file: %v", err)
	}
	if err := s.SetStorageClass(ctx, h, ""); err == nil {
		t.Error("set empty class succeeded")
	}
	// Setting the class a file has is a no-op, not an error.
	if err := s.SetStorageClass(ctx, h, "STANDARD"); err != nil {
		t.Errorf("set STANDARD on a STANDARD file: %v", err)
	}

	err := s.SetStorageClass(ctx, h, "STANDARD_IA")
	switch {
	case errors.Is(err, ErrStorageClassUnsupported):
		// versitygw (posix backend) stores every object as STANDARD.
		t.Logf("the server does not keep storage classes: %v", err)
	case err != nil:
		t.Fatalf("set STANDARD_IA: %v", err)
	default:
		if got := headClass(t, s, h); got != "STANDARD_IA" {
			t.Errorf("class after SetStorageClass(STANDARD_IA) = %q", got)
		}
		if err := s.SetStorageClass(ctx, h, "STANDARD"); err != nil {
			t.Errorf("set back to STANDARD: %v", err)
		}
	}
	if b, err := blob.LoadAll(ctx, s, h); err != nil || !bytes.Equal(b, data) {
		t.Errorf("load after class change: %q, %v", b, err)
	}
	if fi, err := s.Stat(ctx, h); err != nil || fi.Size != int64(len(data)) {
		t.Errorf("stat after class change: %+v, %v", fi, err)
	}
}

func TestStorageClassOnSave(t *testing.T) {
	s := openFresh(t, func(c *Config) {
		c.StorageClass = map[blob.Kind]string{blob.KindData: "STANDARD_IA"}
	})
	data := blob.Handle{Kind: blob.KindData, Name: "00ff"}
	idx := blob.Handle{Kind: blob.KindIndex, Name: "00ff"}
	mustSave(t, s, data, []byte("d"))
	mustSave(t, s, idx, []byte("i"))
	dc, ic := headClass(t, s, data), headClass(t, s, idx)
	t.Logf("storage class of data: %q, of index: %q", dc, ic)
	if ic != "" && ic != "STANDARD" {
		t.Errorf("index file has class %q, want the default", ic)
	}
}
