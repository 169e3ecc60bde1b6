;; Prints a line, sleeps for the number of seconds given as the first argument (3600 without
;; one) inside a WASI host call, then prints another line. Tests use it to check that a task
;; blocked in the host (not in compiled code) can still be killed, and that it can finish.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Layout: iovec at 0, written count at 8, argc at 16, argument size at 20, messages at
  ;; 32 and 48, the clock subscription at 64 (48 bytes), the event at 128 (32 bytes), the
  ;; event count at 160, and the argument pointers and strings from 256 on.
  (data (i32.const 32) "sleeping\n")
  (data (i32.const 48) "awake\n")

  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

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

  ;; Returns argv[1] parsed as decimal seconds, or 3600 when there is no argv[1].
  (func $seconds (result i64)
    (local $argc i32)
    (local $buf i32)
    (local $p i32)
    (local $digit i32)
    (local $value i64)
    (if (call $args_sizes_get (i32.const 16) (i32.const 20))
      (then unreachable))
    (local.set $argc (i32.load (i32.const 16)))
    (if (i32.lt_u (local.get $argc) (i32.const 2))
      (then (return (i64.const 3600))))
    (local.set $buf (i32.add (i32.const 256) (i32.shl (local.get $argc) (i32.const 2))))
    (call $reserve (i32.add (local.get $buf) (i32.load (i32.const 20))))
    (if (call $args_get (i32.const 256) (local.get $buf))
      (then unreachable))
    (local.set $p (i32.load (i32.const 260)))
    (block $done
      (loop $next
        (local.set $digit (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $value
          (i64.add
            (i64.mul (local.get $value) (i64.const 10))
            (i64.extend_i32_u (local.get $digit))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $value))

  (func $main (export "_start")
    (call $print (i32.const 32) (i32.const 9))
    ;; One subscription: userdata 0, tag 0 (clock), clock id 1 (CLOCK_MONOTONIC), a
    ;; timeout in nanoseconds, precision 0 and flags 0 (a relative timeout).
    (i64.store (i32.const 64) (i64.const 0))
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.mul (call $seconds) (i64.const 1000000000)))
    (i64.store (i32.const 96) (i64.const 0))
    (i32.store16 (i32.const 104) (i32.const 0))
    (if (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160))
      (then unreachable))
    (call $print (i32.const 48) (i32.const 6))))
