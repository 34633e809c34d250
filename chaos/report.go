package chaos

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteMarkdown writes rows as a markdown table.
func WriteMarkdown(w io.Writer, rows []Row) error {
	if _, err := fmt.Fprintln(w, "| scenario | expect | faults | ops | granted | lock errors (fail/unknown) | overlaps | hard overlaps | fence regressions | stale rejected | stale accepted | verdict |"); err != nil {
		return err
	}
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rows {
		verdict := "pass"
		if !r.Pass {
			verdict = "**FAIL**: " + r.Reason
		}
		if _, err := fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d/%d | %d | %d | %d | %d | %d | %s |\n",
			r.Name, r.Expect, r.Faults, r.Ops, r.Granted, r.LockFailed, r.LockUnknown, r.Overlaps, r.HardOverlaps,
			r.FenceRegressions, r.StaleRejected, r.StaleAccepted, verdict); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes rows as an indented JSON array.
func WriteJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}
