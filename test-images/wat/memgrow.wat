;; Grows its linear memory 1 MiB (16 pages) at a time from 1 MiB up to 512 MiB, printing
;; "grew to <n> MiB" at every multiple of 64 MiB. Tests use it to check how a runtime limits a
;; guest's memory: when memory.grow returns -1 it prints "memory.grow failed at <n> MiB", <n>
;; being the size it had (the limit), and exits with status 12; on reaching 512 MiB it prints
;; "reached 512 MiB" and exits with 0. The memory has no declared maximum, so only the runtime
;; can refuse. The grown pages are never touched: what is tested is the runtime's limit on
;; growth, not the kernel's on resident memory.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 16)

  ;; Layout: iovec at 0, written count at 8, digits of a number at 32..48, fixed text from 64.
  (data (i32.const 64) "grew to ")
  (data (i32.const 80) " MiB\n")
  (data (i32.const 96) "memory.grow failed at ")
  (data (i32.const 128) "reached 512 MiB\n")

  ;; Writes the range to stdout; a line that cannot be printed has nobody to tell.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

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

  (func $main (export "_start")
    (local $mib i32)
    (local.set $mib (i32.shr_u (memory.size) (i32.const 4)))
    (block $reached
      (loop $grow
        (br_if $reached (i32.ge_u (local.get $mib) (i32.const 512)))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
          (then
            (call $print (i32.const 96) (i32.const 22))
            (call $print_u32 (local.get $mib))
            (call $print (i32.const 80) (i32.const 5))
            (call $proc_exit (i32.const 12))))
        (local.set $mib (i32.add (local.get $mib) (i32.const 1)))
        (if (i32.eqz (i32.rem_u (local.get $mib) (i32.const 64)))
          (then
            (call $print (i32.const 64) (i32.const 8))
            (call $print_u32 (local.get $mib))
            (call $print (i32.const 80) (i32.const 5))))
        (br $grow)))
    (call $print (i32.const 128) (i32.const 16))))
