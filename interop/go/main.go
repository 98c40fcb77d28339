// Command interop-go is tessera's go-spiffe interop check: it talks to a
// running tessera through go-spiffe v2's workloadapi client, unmodified, and
// prints one "PASS go <check> <detail>" or "FAIL go <check>: <reason>" line per
// check. Exit status 1 if any check failed.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var failures int

func pass(check, detail string) { fmt.Printf("PASS go %s %s\n", check, detail) }

func fail(check string, err error) {
	failures++
	fmt.Printf("FAIL go %s: %v\n", check, err)
}

// run runs one check, turning a returned error into a FAIL line.
func run(check string, f func() (string, error)) {
	detail, err := f()
	if err != nil {
		fail(check, err)
		return
	}
	pass(check, detail)
}

func main() {
	socket := flag.String("socket", "", "path of the Workload API Unix socket")
	wantID := flag.String("id", "", "SPIFFE ID the caller is expected to receive")
	audience := flag.String("audience", "interop-go", "audience to request a JWT-SVID for")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline for each RPC")
	flag.Parse()
	if *socket == "" || *wantID == "" {
		fmt.Fprintln(os.Stderr, "usage: interop-go -socket PATH -id SPIFFE_ID [-audience AUD]")
		os.Exit(2)
	}
	id, err := spiffeid.FromString(*wantID)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad -id: %v\n", err)
		os.Exit(2)
	}
	td := id.TrustDomain()

	ctx := context.Background()
	rpcCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, *timeout) }

	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+*socket))
	if err != nil {
		fail("connect", err)
		summary()
	}
	defer client.Close()

	// Bundles first: the SVID checks verify against them.
	var x509Bundles *x509bundle.Set
	run("x509-bundles", func() (string, error) {
		c, cancel := rpcCtx()
		defer cancel()
		set, err := client.FetchX509Bundles(c)
		if err != nil {
			return "", err
		}
		b, ok := set.Get(td)
		if !ok {
			return "", fmt.Errorf("no X.509 bundle for trust domain %q (got %v)", td, bundleTDs(set.Bundles()))
		}
		if len(b.X509Authorities()) == 0 {
			return "", fmt.Errorf("X.509 bundle for %q has no authorities", td)
		}
		for _, ca := range b.X509Authorities() {
			if !ca.IsCA {
				return "", fmt.Errorf("bundle authority %q is not a CA certificate", ca.Subject)
			}
		}
		x509Bundles = set
		return fmt.Sprintf("%s (%d CA)", td, len(b.X509Authorities())), nil
	})

	var jwtBundles *jwtbundle.Set
	run("jwt-bundles", func() (string, error) {
		c, cancel := rpcCtx()
		defer cancel()
		set, err := client.FetchJWTBundles(c)
		if err != nil {
			return "", err
		}
		b, ok := set.Get(td)
		if !ok {
			return "", fmt.Errorf("no JWT bundle for trust domain %q", td)
		}
		if len(b.JWTAuthorities()) == 0 {
			return "", fmt.Errorf("JWT bundle for %q has no keys", td)
		}
		jwtBundles = set
		kids := make([]string, 0, len(b.JWTAuthorities()))
		for kid := range b.JWTAuthorities() {
			kids = append(kids, kid)
		}
		slices.Sort(kids)
		return fmt.Sprintf("%s (kid %s)", td, strings.Join(kids, ",")), nil
	})

	run("x509-svid", func() (string, error) {
		c, cancel := rpcCtx()
		defer cancel()
		svid, err := client.FetchX509SVID(c)
		if err != nil {
			return "", err
		}
		if svid.ID != id {
			return "", fmt.Errorf("SPIFFE ID %q, want %q", svid.ID, id)
		}
		if svid.PrivateKey == nil {
			return "", errors.New("no private key")
		}
		leaf := svid.Certificates[0]
		if !publicKeyEqual(svid.PrivateKey.Public(), leaf.PublicKey) {
			return "", errors.New("private key does not match the leaf certificate")
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
			return "", fmt.Errorf("leaf URI SANs %v, want exactly [%s]", leaf.URIs, id)
		}
		if time.Now().After(leaf.NotAfter) || time.Now().Before(leaf.NotBefore.Add(-time.Minute)) {
			return "", fmt.Errorf("leaf not currently valid (%s .. %s)", leaf.NotBefore, leaf.NotAfter)
		}
		return fmt.Sprintf("%s (expires %s)", svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339)), nil
	})

	run("x509-chain", func() (string, error) {
		if x509Bundles == nil {
			return "", errors.New("skipped: no X.509 bundles")
		}
		c, cancel := rpcCtx()
		defer cancel()
		// FetchX509Context reads the SVID and its bundle from the same
		// FetchX509SVID message; verify against both that bundle and the one
		// FetchX509Bundles returned.
		xc, err := client.FetchX509Context(c)
		if err != nil {
			return "", err
		}
		svid := xc.DefaultSVID()
		for name, src := range map[string]x509bundle.Source{"FetchX509SVID bundle": xc.Bundles, "FetchX509Bundles": x509Bundles} {
			gotID, chains, err := x509svid.Verify(svid.Certificates, src)
			if err != nil {
				return "", fmt.Errorf("x509svid.Verify against %s: %w", name, err)
			}
			if gotID != id {
				return "", fmt.Errorf("verified ID %q, want %q", gotID, id)
			}
			if len(chains) == 0 {
				return "", fmt.Errorf("no chain against %s", name)
			}
		}
		// The TLS view: Go's own RFC 5280 verifier, as a client certificate.
		b, _ := x509Bundles.Get(td)
		roots := x509.NewCertPool()
		for _, ca := range b.X509Authorities() {
			roots.AddCert(ca)
		}
		inter := x509.NewCertPool()
		for _, ca := range svid.Certificates[1:] {
			inter.AddCert(ca)
		}
		if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return "", fmt.Errorf("crypto/x509 Verify: %w", err)
		}
		return fmt.Sprintf("%s verifies against the %s bundle", svid.ID, td), nil
	})

	var token string
	run("jwt-svid", func() (string, error) {
		c, cancel := rpcCtx()
		defer cancel()
		svid, err := client.FetchJWTSVID(c, jwtsvid.Params{Audience: *audience})
		if err != nil {
			return "", err
		}
		if svid.ID != id {
			return "", fmt.Errorf("sub %q, want %q", svid.ID, id)
		}
		if !slices.Contains(svid.Audience, *audience) {
			return "", fmt.Errorf("aud %v does not contain %q", svid.Audience, *audience)
		}
		if !svid.Expiry.After(time.Now()) {
			return "", fmt.Errorf("already expired at %s", svid.Expiry)
		}
		token = svid.Marshal()
		return fmt.Sprintf("%s aud=%s", svid.ID, strings.Join(svid.Audience, ",")), nil
	})

	run("jwt-verify", func() (string, error) {
		if token == "" || jwtBundles == nil {
			return "", errors.New("skipped: no JWT-SVID or no JWT bundles")
		}
		svid, err := jwtsvid.ParseAndValidate(token, jwtBundles, []string{*audience})
		if err != nil {
			return "", fmt.Errorf("jwtsvid.ParseAndValidate: %w", err)
		}
		if svid.ID != id {
			return "", fmt.Errorf("sub %q, want %q", svid.ID, id)
		}
		return fmt.Sprintf("%s signature verifies against the %s JWT bundle", svid.ID, td), nil
	})

	run("jwt-validate", func() (string, error) {
		if token == "" {
			return "", errors.New("skipped: no JWT-SVID")
		}
		c, cancel := rpcCtx()
		defer cancel()
		svid, err := client.ValidateJWTSVID(c, token, *audience)
		if err != nil {
			return "", fmt.Errorf("ValidateJWTSVID: %w", err)
		}
		if svid.ID != id {
			return "", fmt.Errorf("validated sub %q, want %q", svid.ID, id)
		}
		return fmt.Sprintf("%s accepted by ValidateJWTSVID", svid.ID), nil
	})

	run("jwt-validate-rejects", func() (string, error) {
		if token == "" {
			return "", errors.New("skipped: no JWT-SVID")
		}
		// Wrong audience, and a token whose signature was tampered with: the
		// daemon must refuse both with InvalidArgument.
		parts := strings.Split(token, ".")
		sig := []byte(parts[2])
		if sig[0] == 'A' {
			sig[0] = 'B'
		} else {
			sig[0] = 'A'
		}
		tampered := parts[0] + "." + parts[1] + "." + string(sig)
		for _, tc := range []struct{ what, tok, aud string }{
			{"wrong audience", token, *audience + "-other"},
			{"bad signature", tampered, *audience},
		} {
			c, cancel := rpcCtx()
			_, err := client.ValidateJWTSVID(c, tc.tok, tc.aud)
			cancel()
			if err == nil {
				return "", fmt.Errorf("%s: ValidateJWTSVID accepted it", tc.what)
			}
			if status.Code(err) != codes.InvalidArgument {
				return "", fmt.Errorf("%s: want InvalidArgument, got %v", tc.what, err)
			}
		}
		return "wrong audience and bad signature refused with InvalidArgument", nil
	})

	summary()
}

func summary() {
	if failures > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

func bundleTDs(bs []*x509bundle.Bundle) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, b.TrustDomain().String())
	}
	return out
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(equaler); ok {
		return e.Equal(b)
	}
	return reflect.DeepEqual(a, b)
}
