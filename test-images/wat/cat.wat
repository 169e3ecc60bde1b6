;; Copies stdin to stdout until end of input, so tests can check stdin forwarding and large
;; output. A failing read or write exits with status 1.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; Layout: read iovec at 0, read count at 8, write iovec at 16, written count at 24, and
  ;; the copy buffer from 1024 to the end of the first page.
  (global $buf i32 (i32.const 1024))
  (global $buf_len i32 (i32.const 64512))

  ;; Writes the whole range to stdout, retrying short writes, because a pipe may accept
  ;; less than was asked for.
  (func $write_all (param $ptr i32) (param $len i32)
    (local $written i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 16) (local.get $ptr))
        (i32.store (i32.const 20) (local.get $len))
        (if (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
          (then (call $proc_exit (i32.const 1))))
        (local.set $written (i32.load (i32.const 24)))
        (if (i32.eqz (local.get $written))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (local.get $written)))
        (local.set $len (i32.sub (local.get $len) (local.get $written)))
        (br $more))))

  (func $main (export "_start")
    (local $n i32)
    (loop $copy
      (i32.store (i32.const 0) (global.get $buf))
      (i32.store (i32.const 4) (global.get $buf_len))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      ;; A read of zero bytes is the end of input; returning from _start exits with 0.
      (if (local.get $n)
        (then
          (call $write_all (global.get $buf) (local.get $n))
          (br $copy))))))
