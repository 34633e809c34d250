package chaos_test

import (
	"fmt"

	"github.com/distlock/distlock/chaos"
)

// Check reads a history and reports what it breaks. Here two clients hold
// the key "hot" at once, both before their deadlines, and the second got
// an older fence: a hard overlap and a fence regression.
func ExampleCheck() {
	lease := func(client int, token string, fence, invoke, start, end, deadline int64) []chaos.Event {
		keys := []string{chaos.HotKey}
		return []chaos.Event{
			{Client: client, Op: chaos.OpLock, Type: chaos.TypeInvoke, T: invoke, Keys: keys},
			{Client: client, Op: chaos.OpLock, Type: chaos.TypeOK, T: start, Keys: keys, Token: token, Fence: fence, Deadline: deadline},
			{Client: client, Op: chaos.OpCheck, Type: chaos.TypeOK, T: end, Keys: keys, Token: token, Fence: fence, Deadline: deadline},
		}
	}
	var h []chaos.Event
	h = append(h, lease(1, "a", 20, 0, 5, 30, 50)...)
	h = append(h, lease(2, "b", 10, 10, 12, 40, 60)...)
	// Check wants the events in time order.
	for i := 1; i < len(h); i++ {
		for j := i; j > 0 && h[j].T < h[j-1].T; j-- {
			h[j], h[j-1] = h[j-1], h[j]
		}
	}

	r := chaos.Check(h)
	fmt.Println("granted:", r.Granted)
	fmt.Println("hard overlaps:", r.HardOverlaps)
	fmt.Println("fence regressions:", r.FenceRegressions)
	fmt.Println("broken:", r.Broken())
	// Output:
	// granted: 2
	// hard overlaps: 1
	// fence regressions: 1
	// broken: true
}

// Scenarios lists what a full run covers; the CI subset is marked.
func ExampleScenarios() {
	all, ci := chaos.Scenarios(), 0
	for _, s := range all {
		if s.CI {
			ci++
		}
	}
	fmt.Println(len(all), "scenarios,", ci, "in the CI subset")
	fmt.Println(all[0].Name, all[0].Expect)
	fmt.Println(all[len(all)-1].Name, all[len(all)-1].Expect)
	// Output:
	// 69 scenarios, 23 in the CI subset
	// none/plain safe
	// selftest/broken flagged
}
