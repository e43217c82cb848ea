package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the test process
// dies, so that an interrupted test run leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// memDir returns /dev/shm when it is a file system in memory with at
// least 1 GiB free, the room test servers' files may take (append-only
// files, a replica's copy of its master); otherwise "".
func memDir() string {
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		return ""
	}
	if uint64(st.Bavail)*uint64(st.Bsize) < 1<<30 {
		return ""
	}
	return "/dev/shm"
}
