// Package s3 stores the files of a vault in an S3-compatible bucket.
//
// Objects are laid out under an optional key prefix as
//
//	<prefix>/config
//	<prefix>/keys/<name>
//	<prefix>/data/<first 2 chars of name>/<name>
//	<prefix>/tree/<first 2 chars of name>/<name>
//	<prefix>/index/<name>
//	<prefix>/snapshots/<name>
//	<prefix>/locks/<name>
//
// Every file is uploaded with a single PutObject carrying Content-Length and
// Content-MD5, after the whole content has been read into memory and its length
// checked, so a short or long reader never leaves a partial object behind and
// corruption in transit is rejected by the server.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/coffre/coffre/internal/repo/blob"
)

// Config describes where and how to reach a bucket.
type Config struct {
	// Endpoint is the base URL of the S3 service, e.g. "https://s3.example.com"
	// or "http://127.0.0.1:9000". A value without a scheme gets https. Empty
	// means AWS S3 itself, resolved from Region.
	Endpoint string
	// Region is the signing region; empty means "us-east-1".
	Region string
	// Bucket is the bucket name (required).
	Bucket string
	// Prefix is an optional key prefix inside the bucket, without leading or
	// trailing slashes (they are trimmed).
	Prefix string
	// PathStyle addresses the bucket as <endpoint>/<bucket> instead of
	// <bucket>.<endpoint>; most self-hosted servers need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are the static credentials. The caller
	// resolves the secret from an environment variable or a file, never from a
	// literal in a config file. When both are empty, the AWS SDK's default
	// credential chain (environment, shared config, instance role) is used.
	AccessKeyID     string
	SecretAccessKey string
	// StorageClass is the storage class new files of a kind are stored with,
	// e.g. {blob.KindData: "STANDARD_IA"}. A missing kind uses the bucket's
	// default class.
	StorageClass map[blob.Kind]string
}

// Tunables of the HTTP client. Uploads are at most ~64 MiB, so there is no
// overall deadline on a request; a connection that delivers nothing for
// readTimeout fails and is retried by the SDK.
const (
	dialTimeout           = 30 * time.Second
	tlsHandshakeTimeout   = 30 * time.Second
	responseHeaderTimeout = 2 * time.Minute
	readTimeout           = 2 * time.Minute
	maxAttempts           = 5

	// maxObjectSize is the largest object a single PutObject may store.
	maxObjectSize = 5 << 30
	// maxPrealloc bounds the buffer allocated up front for a Save.
	maxPrealloc = 64 << 20
)

// Storage is a blob.Storage on an S3-compatible bucket. It also implements
// blob.StorageClass.
type Storage struct {
	client   *s3.Client
	http     *http.Client
	bucket   string
	prefix   string // "" or "p/" (ends in a slash)
	classes  map[blob.Kind]types.StorageClass
	endpoint string // for messages, never contains secrets
	location string
}

var (
	_ blob.Storage      = (*Storage)(nil)
	_ blob.StorageClass = (*Storage)(nil)
)

// ParseURL parses a location of the form
//
//	s3://host[:port]/bucket[/prefix...][?region=R&path-style=true&insecure=true&data-storage-class=STANDARD_IA]
//
// into a Config without credentials. The endpoint is https://host[:port], or
// http:// when insecure=true. Credentials in the URL are rejected so that
// secrets never end up in a config file.
func ParseURL(u string) (Config, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return Config{}, fmt.Errorf("s3: parse location: %w", err)
	}
	if pu.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3: location %q: scheme must be s3://", redactURL(pu))
	}
	if pu.User != nil {
		return Config{}, fmt.Errorf("s3: location %q: credentials must not be part of the URL; pass them via environment or a file", redactURL(pu))
	}
	if pu.Host == "" {
		return Config{}, fmt.Errorf("s3: location %q: missing host (s3://host[:port]/bucket/prefix)", u)
	}
	if pu.Fragment != "" {
		return Config{}, fmt.Errorf("s3: location %q: unexpected fragment", u)
	}
	path := strings.Trim(pu.Path, "/")
	bucket, prefix, _ := strings.Cut(path, "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("s3: location %q: missing bucket (s3://host[:port]/bucket/prefix)", u)
	}
	prefix, err = cleanPrefix(prefix)
	if err != nil {
		return Config{}, fmt.Errorf("s3: location %q: %w", u, err)
	}
	cfg := Config{Bucket: bucket, Prefix: prefix}
	scheme := "https"
	for key, vals := range pu.Query() {
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("s3: location %q: parameter %q given %d times", u, key, len(vals))
		}
		v := vals[0]
		switch key {
		case "region":
			cfg.Region = v
		case "path-style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3: location %q: path-style=%q: want true or false", u, v)
			}
			cfg.PathStyle = b
		case "insecure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3: location %q: insecure=%q: want true or false", u, v)
			}
			if b {
				scheme = "http"
			}
		case "data-storage-class":
			// Data packs may live in a cheaper class; metadata stays warm.
			if cfg.StorageClass == nil {
				cfg.StorageClass = map[blob.Kind]string{}
			}
			cfg.StorageClass[blob.KindData] = v
		default:
			return Config{}, fmt.Errorf("s3: location %q: unknown parameter %q (known: region, path-style, insecure, data-storage-class)", u, key)
		}
	}
	cfg.Endpoint = scheme + "://" + pu.Host
	return cfg, nil
}

func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User("REDACTED")
	}
	return c.String()
}

// cleanPrefix trims slashes and rejects empty, "." and ".." path segments.
func cleanPrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("invalid prefix %q", p)
		}
	}
	return p, nil
}

// Open connects to the bucket described by cfg and checks that it is
// reachable with the given credentials.
func Open(ctx context.Context, cfg Config) (*Storage, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket given")
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	if prefix != "" {
		prefix += "/"
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, errors.New("s3: give both an access key id and a secret access key, or neither to use the default AWS credential chain")
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	endpoint := cfg.Endpoint
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	endpoint = strings.TrimRight(endpoint, "/")
	if endpoint != "" {
		eu, err := url.Parse(endpoint)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" || eu.User != nil {
			return nil, fmt.Errorf("s3: invalid endpoint %q: want http(s)://host[:port]", endpoint)
		}
	}
	classes := make(map[blob.Kind]types.StorageClass)
	for k, c := range cfg.StorageClass {
		if !k.Valid() {
			return nil, fmt.Errorf("s3: storage class for unknown kind %q", k)
		}
		if c != "" {
			classes[k] = types.StorageClass(c)
		}
	}

	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = tlsHandshakeTimeout
			tr.ResponseHeaderTimeout = responseHeaderTimeout
		}).
		WithReadTimeout(readTimeout).
		Freeze().(*http.Client)

	var awsCfg aws.Config
	retryer := func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })
	}
	if cfg.AccessKeyID != "" {
		awsCfg = aws.Config{
			Region:      region,
			Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")),
			HTTPClient:  httpClient,
			Retryer:     retryer,
		}
	} else {
		awsCfg, err = config.LoadDefaultConfig(ctx,
			config.WithRegion(region),
			config.WithHTTPClient(httpClient),
			config.WithRetryer(retryer),
		)
		if err != nil {
			return nil, fmt.Errorf("s3: load default AWS credentials: %w", err)
		}
	}
	// Content-MD5 protects uploads (set explicitly in Save); the SDK's newer
	// default flexible checksums are only sent where required because many
	// S3-compatible servers reject them.
	awsCfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	awsCfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired

	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})

	shown := endpoint
	if shown == "" {
		shown = "AWS S3 (" + region + ")"
	}
	s := &Storage{
		client:   client,
		http:     httpClient,
		bucket:   cfg.Bucket,
		prefix:   prefix,
		classes:  classes,
		endpoint: shown,
		location: "s3:" + shown + "/" + cfg.Bucket + "/" + strings.TrimSuffix(prefix, "/"),
	}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		err = s.openError(ctx, err)
		httpClient.CloseIdleConnections()
		return nil, err
	}
	return s, nil
}

// openError explains why the bucket check failed. A HEAD response has no
// body, so its status code alone is ambiguous (some servers answer 404 for an
// unknown access key); a ListObjectsV2 of one key gets the precise error code.
func (s *Storage) openError(ctx context.Context, err error) error {
	where := fmt.Sprintf("bucket %q at %s", s.bucket, s.endpoint)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("s3: open %s: %w", where, err)
	}
	status := httpStatus(err)
	if status == 0 {
		return fmt.Errorf("s3: open %s: cannot reach the endpoint: check the endpoint address and the insecure (http/https) setting: %w", where, err)
	}
	code := apiCode(err)
	if _, lerr := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), MaxKeys: aws.Int32(1)}); lerr != nil && httpStatus(lerr) != 0 && apiCode(lerr) != "" {
		err, status, code = lerr, httpStatus(lerr), apiCode(lerr)
	}
	switch {
	case code == "InvalidAccessKeyId" || code == "XAdminUserNotFound": // the latter: versitygw, with status 404
		return fmt.Errorf("s3: open %s: access denied: the server does not know the access key id: check the access key id and secret key: %w", where, err)
	case code == "SignatureDoesNotMatch":
		return fmt.Errorf("s3: open %s: access denied: the signature does not match: check the secret key (and the region): %w", where, err)
	case code == "NoSuchBucket":
		return fmt.Errorf("s3: open %s: bucket does not exist: create it first or check the bucket name: %w", where, err)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || status == http.StatusMovedPermanently:
		return fmt.Errorf("s3: open %s: the bucket is in another region or needs another endpoint: check the region setting: %w", where, err)
	case status == http.StatusForbidden || status == http.StatusUnauthorized || code == "AccessDenied" || code == "Forbidden":
		return fmt.Errorf("s3: open %s: access denied: check the access key id and secret key, and that they may access this bucket: %w", where, err)
	case status == http.StatusNotFound || code == "NotFound":
		return fmt.Errorf("s3: open %s: bucket does not exist: create it first, check the bucket name, or set path-style=true for servers without virtual-host addressing: %w", where, err)
	default:
		return fmt.Errorf("s3: open %s: %w", where, err)
	}
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isNotExist reports whether err says that the object does not exist. A
// missing bucket is not a missing file.
func isNotExist(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	if apiCode(err) == "NoSuchBucket" {
		return false
	}
	return httpStatus(err) == http.StatusNotFound
}

// Location returns the endpoint, bucket and prefix.
func (s *Storage) Location() string { return s.location }

// key returns the object key of h.
func (s *Storage) key(h blob.Handle) string {
	switch h.Kind {
	case blob.KindConfig:
		return s.prefix + "config"
	case blob.KindData, blob.KindTree:
		return s.prefix + string(h.Kind) + "/" + shard(h.Name) + "/" + h.Name
	default:
		return s.prefix + string(h.Kind) + "/" + h.Name
	}
}

// shard is the subdirectory of a data or tree file.
func shard(name string) string {
	if len(name) < 2 {
		return name
	}
	return name[:2]
}

func checkHandle(h blob.Handle) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	if h.Kind == blob.KindConfig && h.Name != "config" {
		return fmt.Errorf("s3: config file must be named \"config\", not %q", h.Name)
	}
	return nil
}

// Save stores exactly size bytes read from rd under h. The content is read
// into memory first and uploaded only if the reader yields exactly size bytes.
func (s *Storage) Save(ctx context.Context, h blob.Handle, rd io.Reader, size int64) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if size < 0 || size > maxObjectSize {
		return fmt.Errorf("s3: save %v: invalid size %d", h, size)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(size, maxPrealloc)) + 1)
	n, err := buf.ReadFrom(io.LimitReader(rd, size+1))
	if err != nil {
		return fmt.Errorf("s3: save %v: read content: %w", h, err)
	}
	if n != size {
		if n > size {
			return fmt.Errorf("s3: save %v: reader yields more than the %d bytes announced", h, size)
		}
		return fmt.Errorf("s3: save %v: reader yields %d bytes, %d announced", h, n, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: save %v: %w", h, err)
	}
	sum := md5.Sum(buf.Bytes())
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.key(h)),
		Body:          bytes.NewReader(buf.Bytes()),
		ContentLength: aws.Int64(size),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ContentType:   aws.String("application/octet-stream"),
	}
	if c, ok := s.classes[h.Kind]; ok {
		in.StorageClass = c
	}
	if _, err := s.client.PutObject(ctx, in); err != nil {
		return fmt.Errorf("s3: save %v: %w", h, err)
	}
	return nil
}

// Load returns a reader of length bytes at offset of h (length 0: to the end).
func (s *Storage) Load(ctx context.Context, h blob.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 || length > math.MaxInt64-offset {
		return nil, fmt.Errorf("s3: load %v: invalid range %d+%d", h, offset, length)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(h))}
	ranged := offset > 0 || length > 0
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("s3: load %v: %w", h, blob.ErrNotExist)
		}
		if ranged && (httpStatus(err) == http.StatusRequestedRangeNotSatisfiable || apiCode(err) == "InvalidRange") {
			// The range starts at or past the end. Only offset == size with
			// length 0 is valid (an empty read at the end).
			fi, serr := s.Stat(ctx, h)
			if serr != nil {
				return nil, serr
			}
			if length == 0 && offset == fi.Size {
				return io.NopCloser(bytes.NewReader(nil)), nil
			}
			return nil, fmt.Errorf("s3: load %v: range %d+%d is past the end (size %d)", h, offset, length, fi.Size)
		}
		return nil, fmt.Errorf("s3: load %v: %w", h, err)
	}
	body := out.Body
	fail := func(format string, args ...any) (io.ReadCloser, error) {
		body.Close()
		return nil, fmt.Errorf("s3: load %v: "+format, append([]any{h}, args...)...)
	}
	contentLength := aws.ToInt64(out.ContentLength)
	var total, skip int64
	if out.ContentRange != nil && *out.ContentRange != "" {
		start, t, ok := parseContentRange(*out.ContentRange)
		if !ok {
			return fail("unexpected Content-Range %q", *out.ContentRange)
		}
		if start != offset {
			return fail("server returned range starting at %d, asked for %d", start, offset)
		}
		total = t
	} else {
		// A full response: the server ignored the range or none was asked.
		total = contentLength
		skip = offset
	}
	if offset+length > total || offset > total {
		return fail("range %d+%d is past the end (size %d)", offset, length, total)
	}
	want := length
	if want == 0 {
		want = total - offset
	}
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			return fail("skip to offset %d: %w", skip, err)
		}
	} else if contentLength != want {
		return fail("server returned %d bytes, want %d", contentLength, want)
	}
	return &exactReader{rc: body, left: want}, nil
}

// parseContentRange parses "bytes START-END/TOTAL".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return start, total, true
}

// exactReader yields exactly left bytes of rc: an early EOF becomes
// io.ErrUnexpectedEOF, and bytes past left are not returned.
type exactReader struct {
	rc   io.ReadCloser
	left int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		return n, io.EOF
	}
	return n, err
}

func (r *exactReader) Close() error { return r.rc.Close() }

// Stat returns the size and modification time of h.
func (s *Storage) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	out, err := s.head(ctx, h)
	if err != nil {
		return blob.FileInfo{}, err
	}
	return blob.FileInfo{Name: h.Name, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

func (s *Storage) head(ctx context.Context, h blob.Handle) (*s3.HeadObjectOutput, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(h))})
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("s3: stat %v: %w", h, blob.ErrNotExist)
		}
		return nil, fmt.Errorf("s3: stat %v: %w", h, err)
	}
	return out, nil
}

// List calls fn for every file of kind k.
func (s *Storage) List(ctx context.Context, k blob.Kind, fn func(blob.FileInfo) error) error {
	if !k.Valid() {
		return fmt.Errorf("s3: list: invalid kind %q", k)
	}
	var listPrefix string
	if k == blob.KindConfig {
		listPrefix = s.prefix + "config"
	} else {
		listPrefix = s.prefix + string(k) + "/"
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(listPrefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3: list %s: %w", k, err)
		}
		for _, obj := range page.Contents {
			name, ok := s.nameOf(k, aws.ToString(obj.Key))
			if !ok {
				continue
			}
			fi := blob.FileInfo{Name: name, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}
			if err := fn(fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// nameOf returns the file name of an object key listed for kind k, and false
// for keys that are not files of the vault.
func (s *Storage) nameOf(k blob.Kind, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return "", false
	}
	var name string
	if k == blob.KindConfig {
		if rest != "config" {
			return "", false
		}
		name = "config"
	} else {
		rest, ok = strings.CutPrefix(rest, string(k)+"/")
		if !ok {
			return "", false
		}
		if k == blob.KindData || k == blob.KindTree {
			dir, n, found := strings.Cut(rest, "/")
			if !found || dir != shard(n) {
				return "", false
			}
			name = n
		} else {
			name = rest
		}
	}
	if (blob.Handle{Kind: k, Name: name}).Valid() != nil {
		return "", false
	}
	return name, true
}

// Remove deletes h; a missing file gives an error wrapping blob.ErrNotExist.
func (s *Storage) Remove(ctx context.Context, h blob.Handle) error {
	if _, err := s.Stat(ctx, h); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(h))}); err != nil {
		return fmt.Errorf("s3: remove %v: %w", h, err)
	}
	return nil
}

// ErrStorageClassUnsupported is returned (wrapped) by SetStorageClass when
// the server does not keep storage classes (it stores every object in one
// class, e.g. versitygw's posix backend).
var ErrStorageClassUnsupported = errors.New("the server does not support storage classes")

// SetStorageClass moves h to storage class class by copying the object onto
// itself (server side, metadata kept). The object's modification time becomes
// the time of the copy. Setting the class an object already has does nothing.
// If the server does not keep the class, the error wraps
// ErrStorageClassUnsupported.
func (s *Storage) SetStorageClass(ctx context.Context, h blob.Handle, class string) error {
	if class == "" {
		return fmt.Errorf("s3: set storage class of %v: empty class", h)
	}
	out, err := s.head(ctx, h)
	if err != nil {
		return err
	}
	if classOf(out.StorageClass) == class {
		return nil
	}
	key := s.key(h)
	_, err = s.client.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:            aws.String(s.bucket),
		Key:               aws.String(key),
		CopySource:        aws.String(escapePath(s.bucket + "/" + key)),
		StorageClass:      types.StorageClass(class),
		MetadataDirective: types.MetadataDirectiveCopy,
	})
	if err != nil {
		if apiCode(err) == "InvalidRequest" && strings.Contains(err.Error(), "copy an object to itself") {
			// The server saw no change: it ignores storage classes.
			return fmt.Errorf("s3: set storage class of %v to %s: %w: %w", h, class, ErrStorageClassUnsupported, err)
		}
		if isNotExist(err) {
			return fmt.Errorf("s3: set storage class of %v: %w", h, blob.ErrNotExist)
		}
		return fmt.Errorf("s3: set storage class of %v to %s: %w", h, class, err)
	}
	out, err = s.head(ctx, h)
	if err != nil {
		return err
	}
	if got := classOf(out.StorageClass); got != class {
		return fmt.Errorf("s3: set storage class of %v to %s: the server reports class %s: %w", h, class, got, ErrStorageClassUnsupported)
	}
	return nil
}

// classOf names the class a HeadObject reports; S3 omits STANDARD.
func classOf(c types.StorageClass) string {
	if c == "" {
		return string(types.StorageClassStandard)
	}
	return string(c)
}

// escapePath URL-escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}

// Close releases idle connections.
func (s *Storage) Close() error {
	s.http.CloseIdleConnections()
	return nil
}
