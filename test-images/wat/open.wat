;; Tries to open each argument after argv[0] below the preopened root (fd 3) and prints one
;; line per argument: "<argument>: ok" or "<argument>: errno <n>" with the WASI errno number.
;; Tests use it to check what a guest can reach: device nodes, a root-only file, read-only
;; bind mounts and escapes through `..`, absolute symlinks and trailing slashes.
;;
;; A plain argument is opened for reading (following symlinks) and one byte is read. An
;; argument "write:<path>" opens <path> for writing with O_CREAT and writes one byte ("x") at
;; offset 0. One leading "/" is stripped, because WASI paths are relative to the preopen. The
;; line names the argument as given, "write:" included. The exit status is always 0.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; Layout: iovec at 0, byte count at 8, opened fd at 12, argc at 16, argument size at 20,
  ;; digits of a number at 32..48, fixed text from 64, the byte read at 128, the byte written
  ;; at 136, and the argument pointers and strings from 1024.
  (data (i32.const 64) ": ok\n")
  (data (i32.const 80) ": errno ")
  (data (i32.const 96) "\n")
  (data (i32.const 112) "write:")
  (data (i32.const 136) "x")

  (global $root_fd i32 (i32.const 3))
  ;; LOOKUP_SYMLINK_FOLLOW, so that symlinks in the image are followed (or refused).
  (global $follow i32 (i32.const 1))
  ;; O_CREAT, for writing.
  (global $creat i32 (i32.const 1))
  ;; The fd_read right (1 << 1) and the fd_write right (1 << 6): only what the one call after
  ;; the open needs, because runtimes pick the open mode from these.
  (global $right_read i64 (i64.const 2))
  (global $right_write i64 (i64.const 64))

  ;; Writes the whole range to stdout, retrying short writes, and exits with status 1 when
  ;; that fails so a test sees a failure instead of silently missing lines.
  (func $print (param $ptr i32) (param $len i32)
    (local $written i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $written (i32.load (i32.const 8)))
        (if (i32.eqz (local.get $written))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $written)))
        (local.set $len (i32.sub (local.get $len) (local.get $written)))
        (br $more))))

  ;; Prints an unsigned number in decimal; the digits are produced backwards from byte 48.
  (func $print_u32 (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 48))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $next (local.get $n)))
    (call $print (local.get $p) (i32.sub (i32.const 48) (local.get $p))))

  ;; Returns the length of a NUL-terminated string.
  (func $strlen (param $ptr i32) (result i32)
    (local $end i32)
    (local.set $end (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $end) (local.get $ptr)))

  ;; Returns 1 when the string at $ptr of $len bytes starts with "write:".
  (func $is_write (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (if (i32.lt_u (local.get $len) (i32.const 6))
      (then (return (i32.const 0))))
    (block $differs
      (loop $next
        (br_if $differs
          (i32.ne
            (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
            (i32.load8_u (i32.add (i32.const 112) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const 6)))
        (return (i32.const 1))))
    (i32.const 0))

  ;; Grows the memory so that every address below $end is in bounds, because the argument
  ;; strings have no size limit we could rely on.
  (func $reserve (param $end i32)
    (local $missing i32)
    (local.set $missing
      (i32.sub
        (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $missing) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $missing)) (i32.const -1))
          (then unreachable)))))

  ;; Opens the path and reads or writes one byte; returns 0 or the first WASI errno.
  (func $try (param $path i32) (param $len i32) (param $write i32) (result i32)
    (local $errno i32)
    (local $fd i32)
    (local.set $errno
      (call $path_open
        (global.get $root_fd) (global.get $follow)
        (local.get $path) (local.get $len)
        (select (global.get $creat) (i32.const 0) (local.get $write))
        (select (global.get $right_write) (global.get $right_read) (local.get $write))
        (i64.const 0) (i32.const 0) (i32.const 12)))
    (if (local.get $errno)
      (then (return (local.get $errno))))
    (local.set $fd (i32.load (i32.const 12)))
    (i32.store (i32.const 0) (select (i32.const 136) (i32.const 128) (local.get $write)))
    (i32.store (i32.const 4) (i32.const 1))
    (local.set $errno
      (if (result i32) (local.get $write)
        (then (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (else (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))))
    ;; A failing close changes nothing the test asks about.
    (drop (call $fd_close (local.get $fd)))
    (local.get $errno))

  (func $main (export "_start")
    (local $argc i32)
    (local $ptrs i32)
    (local $i i32)
    (local $arg i32)
    (local $arg_len i32)
    (local $path i32)
    (local $len i32)
    (local $write i32)
    (local $errno i32)
    (if (call $args_sizes_get (i32.const 16) (i32.const 20))
      (then (call $proc_exit (i32.const 1))))
    (local.set $argc (i32.load (i32.const 16)))
    (local.set $ptrs (i32.const 1024))
    (call $reserve
      (i32.add
        (i32.add (local.get $ptrs) (i32.shl (local.get $argc) (i32.const 2)))
        (i32.load (i32.const 20))))
    (if (call $args_get
          (local.get $ptrs)
          (i32.add (local.get $ptrs) (i32.shl (local.get $argc) (i32.const 2))))
      (then (call $proc_exit (i32.const 1))))
    (local.set $i (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $arg
          (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $arg_len (call $strlen (local.get $arg)))
        (local.set $path (local.get $arg))
        (local.set $len (local.get $arg_len))
        (local.set $write (call $is_write (local.get $path) (local.get $len)))
        (if (local.get $write)
          (then
            (local.set $path (i32.add (local.get $path) (i32.const 6)))
            (local.set $len (i32.sub (local.get $len) (i32.const 6)))))
        (if (i32.and
              (i32.ne (local.get $len) (i32.const 0))
              (i32.eq (i32.load8_u (local.get $path)) (i32.const 47)))
          (then
            (local.set $path (i32.add (local.get $path) (i32.const 1)))
            (local.set $len (i32.sub (local.get $len) (i32.const 1)))))
        (local.set $errno (call $try (local.get $path) (local.get $len) (local.get $write)))
        (call $print (local.get $arg) (local.get $arg_len))
        (if (local.get $errno)
          (then
            (call $print (i32.const 80) (i32.const 8))
            (call $print_u32 (local.get $errno))
            (call $print (i32.const 96) (i32.const 1)))
          (else (call $print (i32.const 64) (i32.const 5))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
