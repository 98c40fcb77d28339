// Verifies a JWT-SVID with github.com/coreos/go-oidc/v3 through tessera's discovery document.
//
//	oidc-verify ISSUER AUDIENCE TOKEN
//
// Prints the subject and exits 0 when the token verifies, prints the error and exits 1 otherwise.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: oidc-verify ISSUER AUDIENCE TOKEN")
		os.Exit(2)
	}
	issuer, audience, token := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		fmt.Println("discovery:", err)
		os.Exit(1)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: audience, SupportedSigningAlgs: []string{oidc.ES256}})
	idt, err := verifier.Verify(ctx, token)
	if err != nil {
		fmt.Println("verify:", err)
		os.Exit(1)
	}
	fmt.Println("verified sub", idt.Subject, "aud", idt.Audience)
}
