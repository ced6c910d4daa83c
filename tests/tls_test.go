package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certPair writes a certificate and key signed by parent (self-signed when
// parent is nil) and returns them.
func certPair(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return cert, key
}

// The API over TCP is served only with TLS off loopback; with --tlsverify
// the docker CLI with a client certificate of the CA gets in, one without
// or with another CA's certificate does not.
func TestDaemonTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := certPair(t, dir, "ca", &x509.Certificate{Subject: pkix.Name{CommonName: "vmctl test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	certPair(t, dir, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "vmctld"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	certPair(t, dir, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	other, otherKey := certPair(t, dir, "other-ca", &x509.Certificate{Subject: pkix.Name{CommonName: "another CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	certPair(t, dir, "rogue", &x509.Certificate{Subject: pkix.Name{CommonName: "rogue"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, other, otherKey)
	f := func(name string) string { return filepath.Join(dir, name) }

	d := startDaemon(t)
	d.crash(t) // no containers run: restarted below with other flags
	const addr = "127.0.0.1:2376"
	d.args = []string{"-H", "tcp://" + addr, "--tlsverify", "--tlscacert", f("ca.pem"), "--tlscert", f("server.pem"), "--tlskey", f("server-key.pem")}
	d.launch(t, d.bin)

	host := "tcp://" + addr
	docker := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", d.netns, "docker", "-H", host}, args...)...)
		c.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=", "DOCKER_HOST=")
		return capture(ctx, t, c, nil)
	}
	r := docker("--tlsverify", "--tlscacert", f("ca.pem"), "--tlscert", f("client.pem"), "--tlskey", f("client-key.pem"), "version", "--format", "{{.Server.APIVersion}}")
	if r.code != 0 || r.stdout != "1.41\n" {
		t.Errorf("docker with a client certificate: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	for name, args := range map[string][]string{
		"no certificate":      {"--tlsverify", "--tlscacert", f("ca.pem")},
		"another CA's client": {"--tlsverify", "--tlscacert", f("ca.pem"), "--tlscert", f("rogue.pem"), "--tlskey", f("rogue-key.pem")},
		"plain TCP":           {},
	} {
		if r := docker(append(args, "version", "--format", "{{.Server.APIVersion}}")...); r.code == 0 || strings.Contains(r.stdout, "1.41") {
			t.Errorf("docker with %s got in: %q", name, r.stdout)
		}
	}

	// Without TLS, tcp:// is refused off loopback and served on loopback.
	d.crash(t)
	d.args = []string{"-H", "tcp://0.0.0.0:2377"}
	c := exec.Command("ip", "netns", "exec", d.netns, d.bin, "--data-root", d.dataRoot, "--exec-root", d.execRoot, "-H", "tcp://0.0.0.0:2377")
	out, err := c.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "serve it on a non-loopback address only over TLS") {
		t.Errorf("vmctld -H tcp://0.0.0.0 without TLS: %v, %s", err, out)
	}
	d.args = []string{"-H", "tcp://127.0.0.1:2377"}
	d.launch(t, d.bin)
	host = "tcp://127.0.0.1:2377"
	if r := docker("version", "--format", "{{.Server.APIVersion}}"); r.code != 0 {
		t.Errorf("docker on loopback TCP: %q", r.stderr)
	}
	if !strings.Contains(d.stderr.String(), "has no TLS") {
		t.Errorf("vmctld did not warn about TCP without TLS: %s", d.stderr)
	}
}
