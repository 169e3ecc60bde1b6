;; Exits with the status given as the first argument (a decimal number), or 0 without one.
;; Tests use it to check that the shim reports a module's proc_exit code as the task's exit status.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

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

  (func $main (export "_start")
    (local $argc i32)
    (local $argv i32)
    (local $buf i32)
    (local $p i32)
    (local $digit i32)
    (local $code i32)
    ;; Bytes 0..4 receive argc and 4..8 the size of the argument strings; the pointer array
    ;; starts at 16 and the strings follow it. A failing call here is a runtime bug, so it
    ;; traps instead of inventing an exit status the test would mistake for the real one.
    (if (call $args_sizes_get (i32.const 0) (i32.const 4))
      (then unreachable))
    (local.set $argc (i32.load (i32.const 0)))
    (local.set $argv (i32.const 16))
    (local.set $buf (i32.add (local.get $argv) (i32.shl (local.get $argc) (i32.const 2))))
    (call $reserve (i32.add (local.get $buf) (i32.load (i32.const 4))))
    (if (call $args_get (local.get $argv) (local.get $buf))
      (then unreachable))
    (if (i32.ge_u (local.get $argc) (i32.const 2))
      (then
        (local.set $p (i32.load offset=4 (local.get $argv)))
        ;; Parsing stops at the first byte that is not a digit, which includes the NUL that
        ;; ends the string: the subtraction wraps it to a large unsigned value.
        (block $done
          (loop $next
            (local.set $digit (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
            (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
            (local.set $code
              (i32.add (i32.mul (local.get $code) (i32.const 10)) (local.get $digit)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $next)))))
    (call $proc_exit (local.get $code))))
