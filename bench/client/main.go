// bench-client: the one Workload API client used for both tessera and spire-agent by bench/compare.
//
// It speaks only the standard SPIFFE Workload API (service SpiffeWorkloadAPI, header
// workload.spiffe.io: true) through go-spiffe's generated gRPC stubs, so neither daemon gets a
// client tuned for it.
//
//	bench-client once -socket PATH      fetch the first X509SVIDResponse, print "ok N", exit (P1 child)
//	bench-client wait -socket PATH      retry a fetch until it succeeds (entries synced)
//	bench-client run  -plan PLAN.json   run P1..P5 against both daemons, alternating, print the table
//	                                    (P1 and P2 also against a third: tessera under spire-server)
//	bench-client hold -socket PATH -n N open N FetchX509SVID streams (16 per connection), print
//	                                    "open N", hold them until stdin closes (for heap profiling)
//	bench-client p4   -socket PATH -pid PID [-streams 1000,10000]
//	                                    P4 only, against one running daemon (bench/p4)
//	bench-client p3   -socket PATH [-seconds S]  P3's cells against one daemon only
//	bench-client warm -socket PATH -n N P2 against one daemon only: N timed fetches on one reused
//	                                    connection (-new: a new connection per call, P2c; -gap D:
//	                                    a pause before each call; -floor: the refused call of P2's
//	                                    floor row); prints p50/p90/p99/max in ms (for profiling)
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "once":
		cmdOnce(os.Args[2:])
	case "wait":
		cmdWait(os.Args[2:])
	case "run":
		cmdRun(os.Args[2:])
	case "hold":
		cmdHold(os.Args[2:])
	case "p4":
		cmdP4(os.Args[2:])
	case "warm":
		cmdWarm(os.Args[2:])
	case "p3":
		cmdP3(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bench-client once|wait|run [flags] (see bench/compare --help)")
	os.Exit(2)
}

// ---------------------------------------------------------------- Workload API calls

func dial(socket string) (*grpc.ClientConn, workload.SpiffeWorkloadAPIClient, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, nil, err
	}
	return conn, workload.NewSpiffeWorkloadAPIClient(conn), nil
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// fetchOnce: new connection → FetchX509SVID → first response with at least one SVID.
func fetchOnce(socket string, timeout time.Duration) error {
	conn, c, err := dial(socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), timeout)
	defer cancel()
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if len(resp.Svids) == 0 || len(resp.Svids[0].X509Svid) == 0 {
		return errors.New("response without an X.509-SVID")
	}
	return nil
}

// fetchRetry retries fetchOnce (Unavailable/PermissionDenied/refused are all retried) until it
// succeeds or `total` has passed. Returns the number of attempts.
func fetchRetry(socket string, total, per, pause time.Duration) (int, error) {
	deadline := time.Now().Add(total)
	for n := 1; ; n++ {
		err := fetchOnce(socket, per)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("after %d attempts in %v: %w", n, total, err)
		}
		time.Sleep(pause)
	}
}

func cmdOnce(args []string) {
	fs := flag.NewFlagSet("once", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	dry := fs.Bool("dry", false, "print \"ok 0\" without contacting the daemon (process-start floor)")
	fs.Parse(args)
	if *dry {
		fmt.Println("ok 0")
		return
	}
	n, err := fetchRetry(*socket, *timeout, 10*time.Second, 2*time.Millisecond)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("ok %d\n", n)
}

func cmdWait(args []string) {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	timeout := fs.Duration("timeout", 180*time.Second, "give up after this long")
	fs.Parse(args)
	n, err := fetchRetry(*socket, *timeout, 2*time.Second, 250*time.Millisecond)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wait %s: %v\n", *socket, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "wait %s: fetched an X.509-SVID after %d attempt(s)\n", *socket, n)
}

func cmdHold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	n := fs.Int("n", 1000, "streams to open")
	per := fs.Int("per", 16, "streams per connection (tessera allows 16)")
	fs.Parse(args)
	open := 0
	for open < *n {
		conn, c, err := dial(*socket)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dial: %v\n", err)
			os.Exit(1)
		}
		defer conn.Close()
		var wg sync.WaitGroup
		var got atomic.Int64
		batch := min(*per, *n-open)
		for j := 0; j < batch; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.FetchX509SVID(withHeader(context.Background()), &workload.X509SVIDRequest{})
				if err == nil {
					if _, err = s.Recv(); err == nil {
						got.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if int(got.Load()) < batch {
			fmt.Fprintf(os.Stderr, "only %d of %d streams opened on a connection\n", got.Load(), batch)
			os.Exit(1)
		}
		open += batch
	}
	fmt.Printf("open %d\n", open)
	io.Copy(io.Discard, os.Stdin)
}

// openStreams opens FetchX509SVID streams on socket, perConn per new HTTP/2 connection, until
// `target` are open (each counted once its first X509SVIDResponse arrived) or `limit` passes.
// It returns the new open count; the connections and cancel functions are appended for closing.
func openStreams(name, socket string, open, target, perConn int, limit time.Time, conns *[]*grpc.ClientConn, cancels *[]context.CancelFunc) int {
	for open < target && time.Now().Before(limit) {
		batch := min(perConn, target-open)
		conn, c, err := dial(socket)
		if err != nil {
			fatal("dial: %v", err)
		}
		*conns = append(*conns, conn)
		var wg sync.WaitGroup
		var got atomic.Int64
		sem := make(chan struct{}, 2*runtime.NumCPU())
		for j := 0; j < batch; j++ {
			ctx, cancel := context.WithCancel(withHeader(context.Background()))
			*cancels = append(*cancels, cancel)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer ocancel()
				// Opening may wait for the server's stream quota (SETTINGS_MAX_CONCURRENT_STREAMS)
				// as well as for the first response: both are bounded, and a stream that did not
				// open in time is cancelled.
				rc := make(chan error, 1)
				go func() {
					s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
					if err == nil {
						_, err = s.Recv()
					}
					rc <- err
				}()
				select {
				case err := <-rc:
					if err == nil {
						got.Add(1)
					}
				case <-octx.Done():
					cancel()
				}
			}()
		}
		wg.Wait()
		open += int(got.Load())
		if int(got.Load()) < batch {
			logf("P4 %s: only %d of %d streams opened on a connection", name, got.Load(), batch)
		}
	}
	return open
}

// cmdP4 runs only P4 against one running daemon (bench/p4): idle RSS, RSS with each stream
// count open, RSS after they closed, and memory per stream, the same way `run` measures P4.
func cmdP4(args []string) {
	fs := flag.NewFlagSet("p4", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	pid := fs.Int("pid", 0, "daemon pid (VmRSS is read from /proc/PID/status)")
	counts := fs.String("streams", "1000,10000", "stream counts, ascending")
	per := fs.Int("per", 16, "streams per HTTP/2 connection")
	settle := fs.Float64("settle", 10, "settle seconds (idle; half of it before each later sample)")
	fs.Parse(args)
	var targets []int
	for _, f := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fatal("bad -streams %q", *counts)
		}
		targets = append(targets, n)
	}
	logf("P4 idle: settling %.0fs", *settle)
	time.Sleep(time.Duration(*settle * float64(time.Second)))
	idle := rssSample(*pid, 5)
	fmt.Printf("idle_mib %.2f (%s)\n", idle, statusBrief(*pid))
	var conns []*grpc.ClientConn
	var cancels []context.CancelFunc
	open := 0
	limit := time.Now().Add(300 * time.Second)
	var last float64
	for _, target := range targets {
		open = openStreams("daemon", *socket, open, target, *per, limit, &conns, &cancels)
		logf("P4: %d streams open, settling", open)
		time.Sleep(time.Duration(*settle / 2 * float64(time.Second)))
		last = rssSample(*pid, 3)
		fmt.Printf("streams %d rss_mib %.2f per_stream_kib %.2f (%s)\n", open, last, (last-idle)*1024/float64(open), statusBrief(*pid))
	}
	for _, c := range cancels {
		c()
	}
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(time.Duration(*settle / 2 * float64(time.Second)))
	fmt.Printf("after_close_mib %.2f (%s)\n", rssSample(*pid, 3), statusBrief(*pid))
}

// statusBrief: the RSS split and thread count from /proc/PID/status, for reading P4's figures.
func statusBrief(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"RssAnon:", "RssFile:", "Threads:"} {
			if strings.HasPrefix(line, k) {
				out = append(out, strings.Join(strings.Fields(line), " "))
			}
		}
	}
	return strings.Join(out, ", ")
}

// cmdWarm: the P2 (or, with -new, P2c) loop against a single daemon, for profiling it alone.
func cmdWarm(args []string) {
	fs := flag.NewFlagSet("warm", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	n := fs.Int("n", 1000, "timed fetches")
	fresh := fs.Bool("new", false, "a new connection per call (P2c) instead of one reused connection (P2)")
	gap := fs.Duration("gap", 0, "pause between fetches (bench/compare interleaves daemons, so each sees a call every ~15-20 ms)")
	floor := fs.Bool("floor", false, "call FetchX509SVID without the security header: the daemon answers InvalidArgument at once (the transport's floor)")
	fs.Parse(args)
	conn, c, err := dial(*socket)
	if err != nil {
		fatal("dial: %v", err)
	}
	defer conn.Close()
	// Untimed: establishes the connection (and the daemon's per-connection state).
	if err := fetchOn(c, 10*time.Second); err != nil {
		fatal("first fetch: %v", err)
	}
	var t []float64
	errs := 0
	deadline := time.Now().Add(4 * time.Minute)
	for i := 0; i < *n && time.Now().Before(deadline); i++ {
		if *gap > 0 {
			time.Sleep(*gap)
		}
		t0 := time.Now()
		if *floor {
			err = floorCall(c)
		} else if *fresh {
			err = fetchOnce(*socket, 5*time.Second)
		} else {
			err = fetchOn(c, 5*time.Second)
		}
		if err != nil {
			errs++
			continue
		}
		t = append(t, ms(time.Since(t0)))
	}
	fmt.Printf("n=%d errors=%d p50=%.3f p90=%.3f p99=%.3f max=%.3f ms\n", len(t), errs, pct(t, 50), pct(t, 90), pct(t, 99), pct(t, 100))
}

// ---------------------------------------------------------------- the plan

type DaemonSpec struct {
	Name   string   `json:"name"`
	Argv   []string `json:"argv"`
	Socket string   `json:"socket"`
	Log    string   `json:"log"`
	// Other processes of this product whose RSS is reported separately (e.g. spire-server).
	ExtraPids map[string]int `json:"extra_pids"`
}

type Plan struct {
	Daemons []DaemonSpec `json:"daemons"` // exactly two: [0] = tessera, [1] = SPIRE
	// tessera as the node agent of the same spire-server (entries for the same binaries, parented
	// to its join-token agent ID): measured in P1 and P2 only, in a column of its own.
	UnderServer    *DaemonSpec `json:"under_server,omitempty"`
	PaddedBinary   string      `json:"padded_binary"`
	P1Starts       int         `json:"p1_starts"`
	P2Fetches      int         `json:"p2_fetches"`
	P3Seconds      float64     `json:"p3_seconds"`
	P3Rounds       int         `json:"p3_rounds"`
	P4Streams      []int       `json:"p4_streams"`
	StreamsPerConn int         `json:"streams_per_conn"`
	P4OpenLimit    float64     `json:"p4_open_limit_seconds"`
	P5Starts       int         `json:"p5_starts"`
	SettleSeconds  float64     `json:"settle_seconds"`
	Machine        string      `json:"machine"`
	Out            string      `json:"out"`
}

type daemon struct {
	spec DaemonSpec
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	runningMu sync.Mutex
	running   = map[*daemon]bool{}
)

func (d *daemon) start() error {
	logf, err := os.OpenFile(d.spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.spec.Argv[0], d.spec.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(d.done)
	runningMu.Lock()
	running[d] = true
	runningMu.Unlock()
	return nil
}

func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
	runningMu.Lock()
	delete(running, d)
	runningMu.Unlock()
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func stopAll() {
	runningMu.Lock()
	ds := make([]*daemon, 0, len(running))
	for d := range running {
		ds = append(ds, d)
	}
	runningMu.Unlock()
	for _, d := range ds {
		d.stop()
	}
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return math.NaN()
}

// rssSample: median of n samples 1 s apart.
func rssSample(pid, n int) float64 {
	var xs []float64
	for i := 0; i < n; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		xs = append(xs, rssMiB(pid))
	}
	return pct(xs, 50)
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	// nearest rank
	r := int(math.Ceil(p/100*float64(len(s)))) - 1
	if r < 0 {
		r = 0
	}
	if r >= len(s) {
		r = len(s) - 1
	}
	return s[r]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// ---------------------------------------------------------------- results

type row struct {
	name string
	// a: tessera (standalone), b: SPIRE, c: tessera under spire-server (NaN: not measured).
	a, b, c      float64
	unit         string
	higherBetter bool
	note         string
}

type results struct {
	rows  []row
	notes []string
	// RSS idle (P4 idle row), for the per-stream memory row.
	idle [2]float64
}

func (r *results) add(name string, a, b float64, unit string, higherBetter bool, note string) {
	r.add3(name, a, b, math.NaN(), unit, higherBetter, note)
}

// add3: a row with a figure for tessera under spire-server too.
func (r *results) add3(name string, a, b, c float64, unit string, higherBetter bool, note string) {
	r.rows = append(r.rows, row{name, a, b, c, unit, higherBetter, note})
	logf("RESULT %-48s tessera=%s SPIRE=%s tessera-under-server=%s %s", name, fmtNum(a), fmtNum(b), fmtNum(c), unit)
}

func fmtNum(x float64) string {
	switch {
	case math.IsNaN(x):
		return "n/a"
	case x >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case x >= 1:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return strconv.FormatFloat(x, 'f', 3, 64)
	}
}

// table: one column per daemon; with a third (tessera under spire-server), the advantage compares
// it with SPIRE on the rows where it was measured (the same server behind both), and standalone
// tessera with SPIRE on the others.
func (r *results) table(names [2]string, third string) string {
	var sb strings.Builder
	if third == "" {
		fmt.Fprintf(&sb, "| Row | Unit | %s | %s | tessera advantage (×) |\n", names[0], names[1])
		sb.WriteString("|---|---|---:|---:|---:|\n")
	} else {
		fmt.Fprintf(&sb, "| Row | Unit | %s | %s | %s | tessera advantage (×) |\n", names[0], third, names[1])
		sb.WriteString("|---|---|---:|---:|---:|---:|\n")
	}
	for _, x := range r.rows {
		mine := x.a
		if !math.IsNaN(x.c) {
			mine = x.c
		}
		adv := math.NaN()
		if mine > 0 && x.b > 0 {
			if x.higherBetter {
				adv = mine / x.b
			} else {
				adv = x.b / mine
			}
		}
		name := x.name
		if x.note != "" {
			name += " (" + x.note + ")"
		}
		advText := fmtNum(adv)
		if third != "" && !math.IsNaN(x.c) && !math.IsNaN(adv) {
			advText += " ᵃ"
		}
		if third == "" {
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", name, x.unit, fmtNum(x.a), fmtNum(x.b), advText)
		} else {
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", name, x.unit, fmtNum(x.a), fmtNum(x.c), fmtNum(x.b), advText)
		}
	}
	if third != "" {
		fmt.Fprintf(&sb, "\nᵃ %s vs %s (the same spire-server behind both); other rows: %s vs %s.\n", third, names[1], names[0], names[1])
	}
	return sb.String()
}

// ---------------------------------------------------------------- run

func cmdRun(args []string) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	planPath := fs.String("plan", "", "plan JSON written by bench/compare")
	fs.Parse(args)
	raw, err := os.ReadFile(*planPath)
	if err != nil {
		fatal("read plan: %v", err)
	}
	var plan Plan
	if err := json.Unmarshal(raw, &plan); err != nil {
		fatal("parse plan: %v", err)
	}
	if len(plan.Daemons) != 2 {
		fatal("plan needs exactly two daemons")
	}
	if plan.StreamsPerConn <= 0 {
		plan.StreamsPerConn = 100
	}
	if plan.P3Rounds <= 0 {
		plan.P3Rounds = 2
	}
	ds := [2]*daemon{{spec: plan.Daemons[0]}, {spec: plan.Daemons[1]}}
	names := [2]string{ds[0].spec.Name, ds[1].spec.Name}
	var third *daemon
	thirdName := ""
	if plan.UnderServer != nil {
		third = &daemon{spec: *plan.UnderServer}
		thirdName = third.spec.Name
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		logf("signal %v: stopping daemons", s)
		stopAll()
		os.Exit(130)
	}()
	defer stopAll()

	res := &results{}
	began := time.Now()

	// TESSERA_BENCH_ONLY=P2,P4 (say) runs only those phases, for a quick look at one row; the
	// daemons are then simply started, and results are not comparable with a full run's order.
	only := os.Getenv("TESSERA_BENCH_ONLY")
	want := func(p string) bool {
		return only == "" || slices.Contains(strings.Split(only, ","), p)
	}
	// P5 first: it (re)starts the daemons, and leaves both running for the rest.
	if want("P5") {
		p5(ds, plan, res)
	} else {
		restart(ds[0])
		restart(ds[1])
	}
	if want("P4") {
		idleRSS(ds, plan, res)
	}
	if third != nil && (want("P1") || want("P2")) {
		// Up for P1 and P2 only; restart() waits until it serves (first sync and SVID prefetch).
		logf("starting %s for P1 and P2", third.spec.Name)
		restart(third)
	}
	if want("P1") {
		p1(ds, third, plan, res)
	}
	if want("P2") {
		p2(ds, third, plan, res)
	}
	if third != nil {
		third.stop()
	}
	if want("P3") {
		p3(ds, plan, res)
	}
	if want("P4") {
		p4(ds, plan, res)
	}

	if exe, err := os.Executable(); err == nil {
		if b, err := os.ReadFile(exe); err == nil {
			t0 := time.Now()
			for i := 0; i < 5; i++ {
				sha256.Sum256(b)
			}
			res.notes = append(res.notes, fmt.Sprintf("For scale: one SHA-256 of the %.1f MiB driver binary (the P2/P3/P4 caller) takes %.1f ms here (Go crypto/sha256); a daemon that hashes the caller's binary on every RPC pays that per call.",
				float64(len(b))/(1<<20), ms(time.Since(t0))/5))
		}
	}
	out := "## Result\n\n" + res.table(names, thirdName) + "\n"
	for _, n := range res.notes {
		out += "- " + n + "\n"
	}
	out += fmt.Sprintf("\nDriver wall time: %s.\n", time.Since(began).Round(time.Second))
	fmt.Print("\n" + out)
	if plan.Out != "" {
		os.WriteFile(plan.Out, []byte(out), 0o644)
	}
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench-client: "+format+"\n", a...)
	stopAll()
	os.Exit(1)
}

// order alternates which daemon goes first, so neither always runs on a warmer machine.
func order(i int) [2]int {
	if i%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// order3 rotates n (2 or 3) daemons so each goes first, second and last in turn.
func order3(i, n int) []int {
	out := make([]int, n)
	for j := range out {
		out[j] = (i + j) % n
	}
	return out
}

// P5: process start → socket accepting and serving a fetch (an X.509-SVID in hand).
func p5(ds [2]*daemon, plan Plan, res *results) {
	logf("P5: start to ready, %d starts each (warm restart: CA / agent SVID already on disk)", plan.P5Starts)
	var t [2][]float64
	for i := 0; i < plan.P5Starts; i++ {
		for _, k := range order(i) {
			d := ds[k]
			os.Remove(d.spec.Socket)
			t0 := time.Now()
			if err := d.start(); err != nil {
				fatal("start %s: %v", d.spec.Name, err)
			}
			_, err := fetchRetry(d.spec.Socket, 120*time.Second, 500*time.Millisecond, time.Millisecond)
			el := time.Since(t0)
			if err != nil {
				fatal("%s never became ready: %v (log: %s)", d.spec.Name, err, d.spec.Log)
			}
			t[k] = append(t[k], ms(el))
			if i < plan.P5Starts-1 {
				d.stop()
			}
		}
	}
	res.add("P5 start → ready, median", pct(t[0], 50), pct(t[1], 50), "ms", false, fmt.Sprintf("n=%d", len(t[0])))
	res.add("P5 start → ready, max", pct(t[0], 100), pct(t[1], 100), "ms", false, "")
}

func idleRSS(ds [2]*daemon, plan Plan, res *results) {
	logf("P4 idle: settling %.0fs", plan.SettleSeconds)
	time.Sleep(time.Duration(plan.SettleSeconds * float64(time.Second)))
	a, b := rssSample(ds[0].pid(), 5), rssSample(ds[1].pid(), 5)
	res.idle = [2]float64{a, b}
	res.add("P4 RSS idle, 1,000 entries", a, b, "MiB", false, "")
	for name, pid := range ds[1].spec.ExtraPids {
		res.notes = append(res.notes, fmt.Sprintf("%s RSS at the same time (not in the %s column): %.1f MiB", name, ds[1].spec.Name, rssSample(pid, 3)))
	}
	for name, pid := range ds[0].spec.ExtraPids {
		res.notes = append(res.notes, fmt.Sprintf("%s RSS at the same time (not in the %s column): %.1f MiB", name, ds[0].spec.Name, rssSample(pid, 3)))
	}
}

// cpuNs is the CPU time all threads of the processes have used so far (schedstat, ns).
func cpuNs(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				total += v
			}
		}
	}
	return total
}

// quiet waits until the processes together use under 2% of a core over 50 ms (at most 3 s),
// returning how long it waited and the CPU they used meanwhile.
func quiet(pids []int) (time.Duration, time.Duration) {
	const window, limit = 50 * time.Millisecond, time.Millisecond
	start, first := time.Now(), cpuNs(pids)
	prev := first
	for time.Since(start) < 3*time.Second {
		time.Sleep(window)
		now := cpuNs(pids)
		if time.Duration(now-prev) < limit {
			return time.Since(start), time.Duration(now - first)
		}
		prev = now
	}
	return time.Since(start), time.Duration(prev - first)
}

// restart stops the daemon and starts it again, returning once it serves the driver (a small
// binary, so the padded binary's digest stays uncached).
func restart(d *daemon) {
	d.stop()
	os.Remove(d.spec.Socket)
	if err := d.start(); err != nil {
		fatal("restart %s: %v", d.spec.Name, err)
	}
	if _, err := fetchRetry(d.spec.Socket, 120*time.Second, 500*time.Millisecond, 5*time.Millisecond); err != nil {
		fatal("%s not ready after restart: %v (log: %s)", d.spec.Name, err, d.spec.Log)
	}
}

// pageCache reads the file through (so it is in the page cache) or asks the kernel to drop its
// clean pages (POSIX_FADV_DONTNEED; nothing maps it at that point).
func pageCache(path string, evict bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if !evict {
		_, err = io.Copy(io.Discard, f)
		return err
	}
	const fadvDontneed = 4
	if _, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontneed, 0, 0); e != 0 {
		return e
	}
	return nil
}

// startOnce: fresh exec of the padded binary; time from just before fork/exec to its "ok" line.
func startOnce(bin, socket string, extra ...string) (time.Duration, int, error) {
	cmd := exec.Command(bin, append([]string{"once", "-socket", socket}, extra...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	line, rerr := bufio.NewReader(out).ReadString('\n')
	el := time.Since(t0)
	io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if rerr != nil || !strings.HasPrefix(line, "ok ") {
		return el, 0, fmt.Errorf("child said %q (%v, %v)", strings.TrimSpace(line), rerr, werr)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ok ")))
	return el, n, nil
}

func p1(ds [2]*daemon, third *daemon, plan Plan, res *results) {
	st, err := os.Stat(plan.PaddedBinary)
	if err != nil {
		fatal("padded binary: %v", err)
	}
	logf("P1: %d fresh starts each of %s (%d MiB)", plan.P1Starts, filepath.Base(plan.PaddedBinary), st.Size()>>20)
	// The first start after the daemon started (tessera's digest cache is cold for this file),
	// twice per daemon, each time just after a restart of that daemon, with the padded binary's
	// page-cache state set the same for both: once read into the page cache, once evicted from it
	// (both daemons then read it from disk). Without this, whichever daemon goes first pays the
	// disk reads (the machine may have paged the file out since setup) and the second finds it
	// cached.
	var first, firstCold [2]float64
	var firstN, firstColdN [2]int
	for _, evict := range []bool{false, true} {
		for _, k := range [2]int{0, 1} {
			restart(ds[k])
			if err := pageCache(plan.PaddedBinary, evict); err != nil {
				fatal("P1 page cache of %s: %v", plan.PaddedBinary, err)
			}
			el, n, err := startOnce(plan.PaddedBinary, ds[k].spec.Socket)
			if err != nil {
				fatal("P1 %s: %v", ds[k].spec.Name, err)
			}
			if evict {
				firstCold[k], firstColdN[k] = ms(el), n
			} else {
				first[k], firstN[k] = ms(el), n
			}
		}
	}
	// [2]: tessera under spire-server (when there is one), interleaved with the other two.
	all := []*daemon{ds[0], ds[1]}
	if third != nil {
		all = append(all, third)
	}
	var t [3][]float64
	var retries [3]int
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < plan.P1Starts && time.Now().Before(deadline); i++ {
		for _, k := range order3(i, len(all)) {
			el, n, err := startOnce(plan.PaddedBinary, all[k].spec.Socket)
			if err != nil {
				fatal("P1 %s: %v", all[k].spec.Name, err)
			}
			retries[k] += n - 1
			t[k] = append(t[k], ms(el))
		}
	}
	// The floor: the same exec with no Workload API call at all.
	var floor []float64
	for i := 0; i < plan.P1Starts; i++ {
		el, _, err := startOnce(plan.PaddedBinary, ds[0].spec.Socket, "-dry")
		if err == nil {
			floor = append(floor, ms(el))
		}
	}
	res.notes = append(res.notes, fmt.Sprintf("P1 floor: fork/exec of the same 100 MiB binary printing its line without any Workload API call: median %.2f ms, p99 %.2f ms (n=%d); it is part of both P1 columns.",
		pct(floor, 50), pct(floor, 99), len(floor)))
	n := fmt.Sprintf("n=%d", len(t[0]))
	// pct of nothing is NaN: no third column without a third daemon.
	res.add3("P1 first X.509-SVID, 100 MiB binary, median", pct(t[0], 50), pct(t[1], 50), pct(t[2], 50), "ms", false, n)
	res.add3("P1 first X.509-SVID, 100 MiB binary, p99", pct(t[0], 99), pct(t[1], 99), pct(t[2], 99), "ms", false, n)
	res.add("P1 very first start after daemon start", first[0], first[1], "ms", false, "n=1, cold digest cache, binary in page cache")
	res.add("P1 very first start after daemon start, binary not in page cache", firstCold[0], firstCold[1], "ms", false, "n=1, cold digest cache, both read it from disk")
	for k := 0; k < 2; k++ {
		retries[k] += firstN[k] - 1 + firstColdN[k] - 1
	}
	if retries[0]+retries[1] > 0 {
		res.notes = append(res.notes, fmt.Sprintf("P1 retried fetches (included in the times): %s %d, %s %d",
			ds[0].spec.Name, retries[0], ds[1].spec.Name, retries[1]))
	}
	if third != nil && retries[2] > 0 {
		res.notes = append(res.notes, fmt.Sprintf("P1 retried fetches (included in the times): %s %d", third.spec.Name, retries[2]))
	}
}

// fetchOn: FetchX509SVID on an existing connection → first response with at least one SVID; the
// stream is then cancelled (RST_STREAM), the connection stays open.
func fetchOn(c workload.SpiffeWorkloadAPIClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), timeout)
	defer cancel()
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if len(resp.Svids) == 0 || len(resp.Svids[0].X509Svid) == 0 {
		return errors.New("response without an X.509-SVID")
	}
	return nil
}

// floorCall: FetchX509SVID without the security header, which a Workload API server refuses
// (InvalidArgument) before any other work: one round trip on the transport alone.
func floorCall(c workload.SpiffeWorkloadAPIClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) == codes.InvalidArgument {
		return nil
	}
	return fmt.Errorf("expected InvalidArgument, got %v", err)
}

// P2: warm fetches. P2 reuses one connection per daemon (as every SDK's X509Source does: one
// channel for the process's life), so it measures the daemon's per-call cost; P2c opens a new
// connection for every call (connect + HTTP/2 handshake + fetch). Both run in blocks: each
// daemon gets a quarter of its calls back to back, the daemons' blocks in alternating order
// (ABC CBA ABC CBA), so no daemon's call lands in the aftermath of another's (spire-agent hashes
// the 10 MiB caller on every call) and neither always runs first. P2i keeps the previous
// interleaved order (one call per daemon in turn), with its floor: the same rotation of calls
// that every daemon refuses before any work (no security header), i.e. what a call costs on this
// machine when the daemon's threads have been idle ~15 ms in between.
func p2(ds [2]*daemon, third *daemon, plan Plan, res *results) {
	// P1 ends with spire-agent having hashed the 100 MiB binary dozens of times (and its
	// garbage collector catching up): let the machine settle first, as before P4's samples.
	logf("P2: settling %.0fs", plan.SettleSeconds/2)
	time.Sleep(time.Duration(plan.SettleSeconds / 2 * float64(time.Second)))
	// The driver's own garbage collector off while it times calls (its mark workers would take
	// one of the 2 cores in the middle of a call, whichever daemon it is); collected between
	// the loops instead.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	logf("P2: %d warm fetches each on one reused connection (blocks, then interleaved), then %d each on a new connection per call", plan.P2Fetches, plan.P2Fetches)
	// [2]: tessera under spire-server (when there is one).
	all := []*daemon{ds[0], ds[1]}
	if third != nil {
		all = append(all, third)
	}
	clients := make([]workload.SpiffeWorkloadAPIClient, len(all))
	for k := range all {
		conn, c, err := dial(all[k].spec.Socket)
		if err != nil {
			fatal("P2 dial %s: %v", all[k].spec.Name, err)
		}
		defer conn.Close()
		// Untimed: establishes the connection (and the daemon's per-connection state).
		if err := fetchOn(c, 10*time.Second); err != nil {
			fatal("P2 first fetch on %s: %v", all[k].spec.Name, err)
		}
		clients[k] = c
	}
	// measure runs n calls per daemon, in blocks or interleaved, and times each. It records
	// each daemon's idle time before each call (since its previous call ended); with replay,
	// it first waits out the idle time recorded for the same call (the interleaved floor: the
	// same idle time P2i gave each call, so the same wake-up cost).
	var last [3]time.Time
	var idle [3][]time.Duration
	// Every process of every daemon (spire-agent's spire-server too), for quiet().
	var watched []int
	for _, d := range all {
		watched = append(watched, d.pid())
		for _, pid := range d.spec.ExtraPids {
			watched = append(watched, pid)
		}
	}
	var quietLog []string
	// Each timed call's position in its block (blocks only), for the log of where the slowest are.
	var pos [3][]int
	cur := 0
	measure := func(blocks bool, replay *[3][]time.Duration, call func(k int) error) (t [3][]float64, errs [3]int) {
		runtime.GC()
		var seen [3]int
		last = [3]time.Time{}
		idle = [3][]time.Duration{}
		pos = [3][]int{}
		timed := func(k int) {
			if replay != nil && seen[k] < len(replay[k]) {
				time.Sleep(replay[k][seen[k]])
			}
			seen[k]++
			t0 := time.Now()
			if !last[k].IsZero() {
				idle[k] = append(idle[k], t0.Sub(last[k]))
			} else {
				idle[k] = append(idle[k], 0)
			}
			defer func() { last[k] = time.Now() }()
			if err := call(k); err != nil {
				errs[k]++
				return
			}
			t[k] = append(t[k], ms(time.Since(t0)))
			pos[k] = append(pos[k], cur)
		}
		deadline := time.Now().Add(4 * time.Minute)
		if !blocks {
			for i := 0; i < plan.P2Fetches && time.Now().Before(deadline); i++ {
				for _, k := range order3(i, len(all)) {
					timed(k)
				}
			}
			return
		}
		const rounds = 4
		for r := 0; r < rounds; r++ {
			ks := order3(0, len(all))
			if r%2 == 1 {
				slices.Reverse(ks)
			}
			for _, k := range ks {
				// Each block starts on a quiet machine: the previous block's daemon finishes
				// its aftermath first (spire-agent's garbage collector after 250 calls that
				// each hashed 10 MiB took one of the 2 cores for the next block's first ~30
				// calls, whichever daemon's).
				waited, spent := quiet(watched)
				quietLog = append(quietLog, fmt.Sprintf("%s %.0fms/%.1fms", all[k].spec.Name, ms(waited), ms(spent)))
				for i := 0; i < plan.P2Fetches/rounds && time.Now().Before(deadline); i++ {
					cur = i
					timed(k)
				}
			}
		}
		return
	}
	floor := func(k int) error { return floorCall(clients[k]) }
	t, errs := measure(true, nil, func(k int) error { return fetchOn(clients[k], 5*time.Second) })
	logf("P2: before each block, waited for the daemons to go quiet (waited/their CPU meanwhile): %s", strings.Join(quietLog, ", "))
	for k := range all {
		// Where in their blocks the slowest 1% were (0: a block's first call, after the other
		// daemons' blocks: the connection's attestation has expired and is redone in full).
		idx := make([]int, len(t[k]))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return t[k][idx[a]] > t[k][idx[b]] })
		var slow []string
		for _, i := range idx[:min(len(idx), max(1, len(idx)/100))] {
			slow = append(slow, fmt.Sprintf("%.2fms@%d", t[k][i], pos[k][i]))
		}
		logf("P2 %s: slowest 1%% (ms@position in block): %s", all[k].spec.Name, strings.Join(slow, " "))
	}
	tfb, _ := measure(true, nil, floor)
	ti, errsi := measure(false, nil, func(k int) error { return fetchOn(clients[k], 5*time.Second) })
	gaps := idle
	var idle0 []float64 // the first daemon's, in ms, for the row's label
	for _, g := range gaps[0] {
		idle0 = append(idle0, ms(g))
	}
	tf, _ := measure(false, &gaps, floor)
	tc, errsc := measure(true, nil, func(k int) error { return fetchOnce(all[k].spec.Socket, 5*time.Second) })
	count := func(t [3][]float64) string {
		if third != nil {
			return fmt.Sprintf("n=%d/%d/%d", len(t[0]), len(t[2]), len(t[1]))
		}
		return fmt.Sprintf("n=%d/%d", len(t[0]), len(t[1]))
	}
	n, nfb, ni, nf, nc := count(t), count(tfb), count(ti), count(tf), count(tc)
	res.add3("P2 warm fetch, connection reused, p50", pct(t[0], 50), pct(t[1], 50), pct(t[2], 50), "ms", false, n)
	res.add3("P2 warm fetch, connection reused, p99", pct(t[0], 99), pct(t[1], 99), pct(t[2], 99), "ms", false, n)
	res.add3("P2 floor: a call refused before any work (no security header), p50", pct(tfb[0], 50), pct(tfb[1], 50), pct(tfb[2], 50), "ms", false, nfb)
	res.add3("P2 floor, p99", pct(tfb[0], 99), pct(tfb[1], 99), pct(tfb[2], 99), "ms", false, nfb)
	res.add3("P2i warm fetch interleaved (one call per daemon in turn), p50", pct(ti[0], 50), pct(ti[1], 50), pct(ti[2], 50), "ms", false, ni)
	res.add3("P2i warm fetch interleaved, p99", pct(ti[0], 99), pct(ti[1], 99), pct(ti[2], 99), "ms", false, ni)
	res.add3(fmt.Sprintf("P2i floor: the refused call after the same idle time (%s median %.1f ms), p50", ds[0].spec.Name, pct(idle0, 50)), pct(tf[0], 50), pct(tf[1], 50), pct(tf[2], 50), "ms", false, nf)
	res.add3("P2i floor, p99", pct(tf[0], 99), pct(tf[1], 99), pct(tf[2], 99), "ms", false, nf)
	res.add3("P2c warm fetch, new connection per call, p50", pct(tc[0], 50), pct(tc[1], 50), pct(tc[2], 50), "ms", false, nc)
	res.add3("P2c warm fetch, new connection per call, p99", pct(tc[0], 99), pct(tc[1], 99), pct(tc[2], 99), "ms", false, nc)
	for k := range errs {
		errs[k] += errsi[k]
	}
	if errs[0]+errs[1]+errs[2]+errsc[0]+errsc[1]+errsc[2] > 0 {
		note := fmt.Sprintf("P2 failed fetches (excluded): reused connection %s %d, %s %d; new connection %s %d, %s %d",
			ds[0].spec.Name, errs[0], ds[1].spec.Name, errs[1], ds[0].spec.Name, errsc[0], ds[1].spec.Name, errsc[1])
		if third != nil {
			note += fmt.Sprintf("; %s: reused %d, new %d", third.spec.Name, errs[2], errsc[2])
		}
		res.notes = append(res.notes, note)
	}
}

// p3Cell: `conc` workers, each on its own connection, for `dur`; returns ops/s and errors.
func p3Cell(socket string, conc int, dur time.Duration, validate bool, token string) (float64, int64) {
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	var seq atomic.Int64
	stop := time.Now().Add(dur)
	t0 := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, c, err := dial(socket)
			if err != nil {
				bad.Add(1)
				return
			}
			defer conn.Close()
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(withHeader(context.Background()), 10*time.Second)
				if validate {
					_, err = c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "bench-validate", Svid: token})
				} else {
					// A new audience each call: a token is minted and signed every time (neither
					// daemon can answer from a token cache).
					aud := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), seq.Add(1))
					var r *workload.JWTSVIDResponse
					r, err = c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{aud}})
					if err == nil && len(r.Svids) == 0 {
						err = errors.New("no JWT-SVID")
					}
				}
				cancel()
				if err != nil {
					bad.Add(1)
					time.Sleep(time.Millisecond)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(t0).Seconds(), bad.Load()
}

// cmdP3: the P3 cells against a single daemon, for profiling it alone.
func cmdP3(args []string) {
	fs := flag.NewFlagSet("p3", flag.ExitOnError)
	socket := fs.String("socket", "", "Workload API socket path")
	secs := fs.Float64("seconds", 3, "seconds per cell")
	fs.Parse(args)
	dur := time.Duration(*secs * float64(time.Second))
	token := jwtToken(*socket)
	for _, validate := range []bool{false, true} {
		for _, conc := range []int{1, 2} {
			rate, bad := p3Cell(*socket, conc, dur, validate, token)
			what := "minted"
			if validate {
				what = "validations"
			}
			fmt.Printf("%s/s concurrency %d: %.0f (errors %d)\n", what, conc, rate, bad)
		}
	}
}

func jwtToken(socket string) string {
	conn, c, err := dial(socket)
	if err != nil {
		fatal("dial: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	r, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"bench-validate"}})
	if err != nil || len(r.Svids) == 0 {
		fatal("FetchJWTSVID on %s: %v", socket, err)
	}
	return r.Svids[0].Svid
}

func p3(ds [2]*daemon, plan Plan, res *results) {
	dur := time.Duration(plan.P3Seconds * float64(time.Second))
	logf("P3: JWT mint and validate, concurrency 1 and 2, %d rounds × %v per daemon and cell", plan.P3Rounds, dur)
	tokens := [2]string{jwtToken(ds[0].spec.Socket), jwtToken(ds[1].spec.Socket)}
	for _, validate := range []bool{false, true} {
		for _, conc := range []int{1, 2} {
			var sum [2]float64
			var errs [2]int64
			for r := 0; r < plan.P3Rounds; r++ {
				for _, k := range order(r) {
					rate, bad := p3Cell(ds[k].spec.Socket, conc, dur, validate, tokens[k])
					sum[k] += rate
					errs[k] += bad
				}
			}
			what := "P3 JWT-SVIDs minted/s"
			if validate {
				what = "P3 JWT validations/s"
			}
			name := fmt.Sprintf("%s, concurrency %d", what, conc)
			res.add(name, sum[0]/float64(plan.P3Rounds), sum[1]/float64(plan.P3Rounds), "ops/s", true, "")
			if errs[0]+errs[1] > 0 {
				res.notes = append(res.notes, fmt.Sprintf("%s: failed calls %s %d, %s %d", name, ds[0].spec.Name, errs[0], ds[1].spec.Name, errs[1]))
			}
		}
	}
}

// P4: many open FetchX509SVID streams, StreamsPerConn per HTTP/2 connection; RSS at each target.
func p4(ds [2]*daemon, plan Plan, res *results) {
	var rss [2][]float64
	var reached [2][]int
	var after [2]float64
	for k := 0; k < 2; k++ {
		d := ds[k]
		logf("P4: opening streams on %s", d.spec.Name)
		var conns []*grpc.ClientConn
		var cancels []context.CancelFunc
		open := 0
		limit := time.Now().Add(time.Duration(plan.P4OpenLimit * float64(time.Second)))
		for _, target := range plan.P4Streams {
			open = openStreams(d.spec.Name, d.spec.Socket, open, target, plan.StreamsPerConn, limit, &conns, &cancels)
			logf("P4 %s: %d streams open, settling", d.spec.Name, open)
			time.Sleep(time.Duration(plan.SettleSeconds / 2 * float64(time.Second)))
			rss[k] = append(rss[k], rssSample(d.pid(), 3))
			reached[k] = append(reached[k], open)
		}
		for _, c := range cancels {
			c()
		}
		for _, c := range conns {
			c.Close()
		}
		// What the daemon gives back once every stream and connection is gone (allocator
		// retention: a flood must not leave the daemon big).
		time.Sleep(time.Duration(plan.SettleSeconds / 2 * float64(time.Second)))
		after[k] = rssSample(d.pid(), 3)
	}
	for i, target := range plan.P4Streams {
		note := ""
		if reached[0][i] != target || reached[1][i] != target {
			note = fmt.Sprintf("reached %d / %d in the time limit", reached[0][i], reached[1][i])
		}
		res.add(fmt.Sprintf("P4 RSS with %d open FetchX509SVID streams", target), rss[0][i], rss[1][i], "MiB", false, note)
	}
	if len(plan.P4Streams) > 0 {
		res.add(fmt.Sprintf("P4 RSS after the %d streams closed", plan.P4Streams[len(plan.P4Streams)-1]), after[0], after[1], "MiB", false, "")
	}
	// Memory per stream: (RSS at the largest count − idle RSS) / streams reached, in KiB. Everything
	// the streams cost is in it: task, channels, attestation, h2 stream and connection state (one
	// connection per StreamsPerConn streams), and allocator overhead.
	last := len(plan.P4Streams) - 1
	if last >= 0 {
		var per [2]float64
		for k := 0; k < 2; k++ {
			per[k] = math.NaN()
			if reached[k][last] > 0 {
				per[k] = (rss[k][last] - res.idle[k]) * 1024 / float64(reached[k][last])
			}
		}
		res.add(fmt.Sprintf("P4 memory per open stream ((RSS at %d − idle) / %d)", plan.P4Streams[last], plan.P4Streams[last]),
			per[0], per[1], "KiB", false, "")
		if last >= 1 && reached[0][last] > reached[0][0] && reached[1][last] > reached[1][0] {
			var marg [2]float64
			for k := 0; k < 2; k++ {
				marg[k] = (rss[k][last] - rss[k][0]) * 1024 / float64(reached[k][last]-reached[k][0])
			}
			res.notes = append(res.notes, fmt.Sprintf("P4 marginal memory per stream between %d and %d streams: %s %.1f KiB, %s %.1f KiB",
				plan.P4Streams[0], plan.P4Streams[last], ds[0].spec.Name, marg[0], ds[1].spec.Name, marg[1]))
		}
	}
}
