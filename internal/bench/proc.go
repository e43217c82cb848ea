package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// ProcStats are a process's resident memory and CPU time as /proc reports
// them.
type ProcStats struct {
	RSSKB int64         // resident set size, in KiB
	CPU   time.Duration // user plus system time
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ),
// 100 per second on every Linux platform.
const clockTick = 10 * time.Millisecond

// ReadProc reads the stats of process pid from /proc; pid 0 means this
// process.
func ReadProc(pid int) (ProcStats, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var st ProcStats
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return st, fmt.Errorf("bench: reading process stats: %w", err)
	}
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
			if st.RSSKB, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				return st, fmt.Errorf("bench: %s/status: VmRSS %q", dir, v)
			}
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return st, fmt.Errorf("bench: reading process stats: %w", err)
	}
	// The command name in parentheses may hold spaces; fields follow the
	// last ')'. utime and stime are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return st, errors.New("bench: malformed " + dir + "/stat")
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return st, errors.New("bench: malformed " + dir + "/stat")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return st, errors.New("bench: malformed " + dir + "/stat")
	}
	st.CPU = time.Duration(utime+stime) * clockTick
	return st, nil
}

// readProcs sums the stats of several processes.
func readProcs(pids []int) (ProcStats, error) {
	var sum ProcStats
	for _, pid := range pids {
		st, err := ReadProc(pid)
		if err != nil {
			return sum, err
		}
		sum.RSSKB += st.RSSKB
		sum.CPU += st.CPU
	}
	return sum, nil
}

// peakRSS follows the resident memory of processes while a run loads them.
type peakRSS struct {
	once    sync.Once
	stopped chan struct{}
	done    chan struct{}
	peak    int64
}

// rssEvery is how often watchRSS reads /proc.
const rssEvery = 50 * time.Millisecond

// watchRSS reads the summed RSS of pids until stop, keeping the highest,
// which starts at fromKB.
func watchRSS(pids []int, fromKB int64) *peakRSS {
	p := &peakRSS{stopped: make(chan struct{}), done: make(chan struct{}), peak: fromKB}
	go func() {
		defer close(p.done)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			if st, err := readProcs(pids); err == nil {
				p.peak = max(p.peak, st.RSSKB)
			}
			select {
			case <-t.C:
			case <-p.stopped:
				return
			}
		}
	}()
	return p
}

// stop ends the watch and returns the highest RSS seen, in KiB. It may be
// called more than once.
func (p *peakRSS) stop() int64 {
	p.once.Do(func() { close(p.stopped) })
	<-p.done
	return p.peak
}
