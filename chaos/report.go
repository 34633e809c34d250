package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// WriteMarkdown writes rows as a markdown table. Related figures share a
// column, separated by slashes, in the order the header names them.
func WriteMarkdown(w io.Writer, rows []Row) error {
	if _, err := fmt.Fprintln(w, "| scenario | expect | faults | ops | granted | lock fail/unknown | overlaps/hard | fence regressions | stale writes rejected/accepted/late | unlock fail/unknown/released | lost grants/expired (max ms) | max stall/head-of-line ms | notice lag max/p50 ms | leftover keys/goroutines | verdict |"); err != nil {
		return err
	}
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rows {
		verdict := "pass"
		if !r.Pass {
			verdict = "**FAIL**: " + r.Reason
		}
		lost := fmt.Sprintf("%d/%d", r.LostGrants, r.LostGrantsExpired)
		if r.LostGrants > 0 {
			lost += " (" + fmtMS(r.LostGrantMaxHoldMS) + ")"
		}
		lag := fmtMS(r.NoticeLagMaxMS) + "/" + fmtMS(r.NoticeLagP50MS)
		if r.Unnoticed > 0 {
			lag += fmt.Sprintf(", %d unnoticed", r.Unnoticed)
		}
		left := fmt.Sprintf("%d/%d", r.LeftoverLocks, r.LeftoverGoroutines)
		if n := r.LeftoverLocksNoTTL + r.LeftoverPersistent; n > 0 {
			left += fmt.Sprintf(" (%d without TTL)", n)
		}
		faults := strconv.Itoa(r.Faults)
		if r.FaultErrors > 0 {
			faults += fmt.Sprintf(" (%d failed)", r.FaultErrors)
		}
		overlaps := fmt.Sprintf("%d/%d", r.Overlaps, r.HardOverlaps)
		if r.LostLeases > 0 {
			overlaps += fmt.Sprintf(", %d lost at failover", r.LostLeases)
		}
		stall := fmtMS(r.MaxStallMS) + "/" + fmtMS(r.HeadOfLineMaxMS)
		if r.WatcherEvents == 0 {
			lost, lag, stall = "-", "-", "-"
		}
		if _, err := fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %d/%d | %s | %d | %d/%d/%d | %d/%d/%d | %s | %s | %s | %s | %s |\n",
			r.Name, r.Expect, faults, r.Ops, r.Granted, r.LockFailed, r.LockUnknown, overlaps,
			r.FenceRegressions, r.StaleRejected, r.StaleAccepted, r.LateWritesAccepted,
			r.UnlockFailed, r.UnlockUnknown, r.UnlockFailedReleased, lost, stall, lag, left, verdict); err != nil {
			return err
		}
	}
	return nil
}

func fmtMS(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// WriteJSON writes rows as an indented JSON array.
func WriteJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}
