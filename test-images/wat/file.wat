;; Writes a file under the preopened root directory (fd 3), reads it back and prints it, so
;; tests can check that the container's rootfs is preopened and writable. Any failing WASI
;; call prints "file error <step>" to stderr and exits with status 1.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; Layout: iovec at 0, byte count at 8, opened fd at 12, the error iovecs at 512 (three
  ;; of them), fixed text from 64 to 280, and the read buffer from 1024.
  (data (i32.const 64) "tmp/wasm-test.txt")
  (data (i32.const 96) "written by wasm\n")
  (data (i32.const 128) "file error ")
  (data (i32.const 160) "open-write")
  (data (i32.const 176) "write")
  (data (i32.const 192) "close-write")
  (data (i32.const 208) "open-read")
  (data (i32.const 224) "read")
  (data (i32.const 240) "stdout")
  (data (i32.const 256) "close-read")
  (data (i32.const 272) "\n")

  (global $root_fd i32 (i32.const 3))
  (global $path i32 (i32.const 64))
  (global $path_len i32 (i32.const 17))
  (global $text i32 (i32.const 96))
  (global $text_len i32 (i32.const 16))
  (global $buf i32 (i32.const 1024))
  (global $buf_len i32 (i32.const 4096))
  ;; Every right a regular file can hold: fd_datasync through fd_allocate (0x1ff), the
  ;; fd_filestat_* rights (0xe00000) and poll_fd_readwrite (0x8000000). Directory and socket
  ;; rights are left out because stricter runtimes (uvwasi, for one) refuse to open a file
  ;; with them (ENOTCAPABLE); wasmtime only looks at fd_read and fd_write to pick the mode.
  (global $rights i64 (i64.const 0x08e001ff))
  ;; O_CREAT | O_TRUNC.
  (global $create i32 (i32.const 9))
  ;; LOOKUP_SYMLINK_FOLLOW.
  (global $follow i32 (i32.const 1))

  ;; Prints "file error <step>\n" to stderr in a single write and exits with status 1.
  (func $fail (param $step i32) (param $step_len i32)
    (i32.store (i32.const 512) (i32.const 128))
    (i32.store (i32.const 516) (i32.const 11))
    (i32.store (i32.const 520) (local.get $step))
    (i32.store (i32.const 524) (local.get $step_len))
    (i32.store (i32.const 528) (i32.const 272))
    (i32.store (i32.const 532) (i32.const 1))
    (drop (call $fd_write (i32.const 2) (i32.const 512) (i32.const 3) (i32.const 8)))
    (call $proc_exit (i32.const 1)))

  ;; Fails with the given step name when a WASI call returned a non-zero errno.
  (func $check (param $errno i32) (param $step i32) (param $step_len i32)
    (if (local.get $errno)
      (then (call $fail (local.get $step) (local.get $step_len)))))

  ;; Opens the test file relative to the preopened root and returns the new fd.
  (func $open (param $oflags i32) (param $step i32) (param $step_len i32) (result i32)
    (call $check
      (call $path_open
        (global.get $root_fd) (global.get $follow)
        (global.get $path) (global.get $path_len)
        (local.get $oflags) (global.get $rights) (global.get $rights)
        (i32.const 0) (i32.const 12))
      (local.get $step) (local.get $step_len))
    (i32.load (i32.const 12)))

  ;; Writes the range to $fd with one call; a short write counts as a failure because the
  ;; amounts here are tiny and a partial result would make the test output misleading.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (param $step i32) (param $step_len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $check
      (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (local.get $step) (local.get $step_len))
    (if (i32.ne (i32.load (i32.const 8)) (local.get $len))
      (then (call $fail (local.get $step) (local.get $step_len)))))

  (func $main (export "_start")
    (local $fd i32)
    (local $n i32)
    (local.set $fd (call $open (global.get $create) (i32.const 160) (i32.const 10)))
    (call $write (local.get $fd) (global.get $text) (global.get $text_len)
      (i32.const 176) (i32.const 5))
    (call $check (call $fd_close (local.get $fd)) (i32.const 192) (i32.const 11))

    (local.set $fd (call $open (i32.const 0) (i32.const 208) (i32.const 9)))
    (block $eof
      (loop $next
        (i32.store (i32.const 0) (global.get $buf))
        (i32.store (i32.const 4) (global.get $buf_len))
        (call $check
          (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
          (i32.const 224) (i32.const 4))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $write (i32.const 1) (global.get $buf) (local.get $n) (i32.const 240) (i32.const 6))
        (br $next)))
    (call $check (call $fd_close (local.get $fd)) (i32.const 256) (i32.const 10))))
