package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar"
	"github.com/idscp2-sidecar/idscp2-sidecar/sidecar/config"
)

func runSidecar(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML; see docs/config.md)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "run: --config is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "configuration %s:\n%v\n", *path, err)
		return 2
	}
	if *check {
		fmt.Fprintf(stderr, "configuration %s is valid\n", *path)
		return 0
	}
	level := new(slog.LevelVar)
	log := newLogger(stderr, cfg.Log, level)
	s, err := sidecar.New(cfg, sidecar.Options{Logger: log})
	if err != nil {
		log.Error("cannot build the sidecar", "err", err)
		return 2
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := s.Start(ctx); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-ctx.Done():
			sig = syscall.SIGTERM
		}
		if sig == syscall.SIGHUP {
			next, err := config.Load(*path)
			if err == nil {
				err = s.Reload(next)
			} else {
				s.Metrics().ReloadOK.Set(0)
			}
			if err != nil {
				log.Error("reload refused; the running configuration stays", "err", err)
				continue
			}
			cfg = next // drain timeout and log level follow the file
			level.Set(parseLevel(cfg.Log.Level))
			continue
		}
		timeout := cfg.Shutdown.DrainTimeout.D()
		log.Info("draining", "signal", sig.String(), "timeout", timeout)
		dctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := s.Shutdown(dctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("drain finished with errors", "err", err)
		}
		log.Info("stopped")
		return 0
	}
}

func parseLevel(s string) slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return level
}

func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	level.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
