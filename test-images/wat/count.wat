;; Prints 1, 2, 3, ... one number per line every 50 ms, forever, sleeping in poll_oneoff with
;; a relative CLOCK_MONOTONIC timeout. Tests use it for a guest that keeps producing output
;; while blocked in the host most of the time: following logs, pausing and resuming, and
;; stopping a task that is between host calls.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Layout: iovec at 0, written count at 8, the digits of a line at 32..48 followed by its
  ;; newline at 48, the clock subscription at 64 (48 bytes), the event at 128 (32 bytes) and
  ;; the event count at 160.
  (data (i32.const 48) "\n")

  ;; Prints $n and a newline in one write, so that a line is never split.
  (func $print_line (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 48))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $next (local.get $n)))
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (i32.sub (i32.const 49) (local.get $p)))
    ;; A failed write is not fatal: a reader that went away must not turn into a trap.
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $main (export "_start")
    (local $n i32)
    ;; One subscription: userdata 0, tag 0 (clock), clock id 1 (CLOCK_MONOTONIC), a timeout
    ;; of 50 ms in nanoseconds, precision 0 and flags 0 (a relative timeout). It never
    ;; changes, so it is written once.
    (i64.store (i32.const 64) (i64.const 0))
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.const 50000000))
    (i64.store (i32.const 96) (i64.const 0))
    (i32.store16 (i32.const 104) (i32.const 0))
    (loop $forever
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (call $print_line (local.get $n))
      ;; A failing poll would turn this into a busy loop; trapping says what went wrong.
      (if (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160))
        (then unreachable))
      (br $forever))))
