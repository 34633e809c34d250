package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/distlock/distlock/chaos"
)

func main() {
	if chaos.IsClient() {
		os.Exit(chaos.ClientMain())
	}
	os.Exit(run())
}

func run() int {
	var opts chaos.Options
	flag.IntVar(&opts.Clients, "clients", 5, "client processes per scenario")
	flag.DurationVar(&opts.Duration, "duration", 0, "duration of each scenario (default 5s)")
	flag.DurationVar(&opts.TTL, "ttl", 0, "lock TTL (default 500ms)")
	flag.Uint64Var(&opts.Seed, "seed", 1, "random seed")
	flag.BoolVar(&opts.NoRetries, "no-retries", false, "clients set go-redis MaxRetries to -1 instead of the default options")
	flag.BoolVar(&opts.ClusterSingleKey, "cluster-single-key", false, "clients on a Redis Cluster lock one key at a time, never the hot key and a cold key (two slots) together")
	dir := flag.String("dir", "", "work directory for histories and logs (default: a new temporary directory)")
	only := flag.String("scenarios", "", "comma-separated scenario names to run (default: all); -list shows them")
	list := flag.Bool("list", false, "list the scenarios and exit")
	ci := flag.Bool("ci", false, "run only the scenarios of the CI subset")
	flag.Parse()

	all := chaos.Scenarios()
	if *list {
		for _, s := range all {
			ciMark := ""
			if s.CI {
				ciMark = ", ci"
			}
			fmt.Printf("%s\t(%s%s)\n", s.Name, s.Expect, ciMark)
		}
		return 0
	}
	var scenarios []chaos.Scenario
	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n != "" {
			want[n] = true
		}
	}
	known := map[string]bool{}
	for _, s := range all {
		known[s.Name] = true
		if (len(want) == 0 && (!*ci || s.CI)) || want[s.Name] {
			scenarios = append(scenarios, s)
		}
	}
	for n := range want {
		if !known[n] {
			fmt.Fprintf(os.Stderr, "chaos: unknown scenario %q (see -list)\n", n)
			return 2
		}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
		*dir = d
	}
	opts.Dir = *dir
	opts.Log = os.Stderr
	exe, err := os.Executable()
	if err == nil {
		opts.Exe = exe
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	var rows []chaos.Row
	code := 0
	for _, s := range scenarios {
		row, err := chaos.Run(ctx, s, opts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chaos: scenario %s: %v\n", s.Name, err)
			return 2
		}
		if !row.Pass {
			code = 1
			for _, ex := range row.Examples {
				fmt.Fprintf(os.Stderr, "  %s: %s\n", s.Name, ex)
			}
		}
		rows = append(rows, row)
	}
	if err := chaos.WriteMarkdown(os.Stdout, rows); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	f, err := os.Create(filepath.Join(*dir, "results.json"))
	if err == nil {
		err = chaos.WriteJSON(f, rows)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "histories and results.json in %s\n", *dir)
	return code
}
