;; Prints every argument as "arg[<i>]=<value>" and then every environment entry as
;; "env=<KEY=VALUE>", one per line, so tests can check what the shim passed to the module.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; Layout: iovec at 0, written count at 8, entry count at 16, string size at 20, digits
  ;; of a number at 32..48, fixed text at 64, and the pointer arrays and strings from 1024.
  (data (i32.const 64) "arg[")
  (data (i32.const 68) "]=")
  (data (i32.const 72) "\n")
  (data (i32.const 76) "env=")

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

  ;; Prints a NUL-terminated string without its terminator.
  (func $print_cstr (param $ptr i32)
    (local $end i32)
    (local.set $end (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $next)))
    (call $print (local.get $ptr) (i32.sub (local.get $end) (local.get $ptr))))

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

  ;; Grows the memory so that every address below $end is in bounds, because neither the
  ;; arguments nor the environment have a size limit we could rely on.
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

  ;; Returns where the strings start for a pointer array of $count entries at $ptrs, after
  ;; making sure the array and $size bytes of strings fit in memory.
  (func $layout (param $ptrs i32) (param $count i32) (param $size i32) (result i32)
    (local $strings i32)
    (local.set $strings (i32.add (local.get $ptrs) (i32.shl (local.get $count) (i32.const 2))))
    (call $reserve (i32.add (local.get $strings) (local.get $size)))
    (local.get $strings))

  (func $main (export "_start")
    (local $count i32)
    (local $ptrs i32)
    (local $strings i32)
    (local $i i32)
    (if (call $args_sizes_get (i32.const 16) (i32.const 20))
      (then (call $proc_exit (i32.const 1))))
    (local.set $count (i32.load (i32.const 16)))
    (local.set $ptrs (i32.const 1024))
    (local.set $strings
      (call $layout (local.get $ptrs) (local.get $count) (i32.load (i32.const 20))))
    (if (call $args_get (local.get $ptrs) (local.get $strings))
      (then (call $proc_exit (i32.const 1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (call $print (i32.const 64) (i32.const 4))
        (call $print_u32 (local.get $i))
        (call $print (i32.const 68) (i32.const 2))
        (call $print_cstr
          (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $i) (i32.const 2)))))
        (call $print (i32.const 72) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))

    ;; The environment goes after the argument strings, with its pointer array aligned to 4.
    (local.set $ptrs
      (i32.and
        (i32.add (i32.add (local.get $strings) (i32.load (i32.const 20))) (i32.const 3))
        (i32.const -4)))
    (if (call $environ_sizes_get (i32.const 16) (i32.const 20))
      (then (call $proc_exit (i32.const 1))))
    (local.set $count (i32.load (i32.const 16)))
    (local.set $strings
      (call $layout (local.get $ptrs) (local.get $count) (i32.load (i32.const 20))))
    (if (call $environ_get (local.get $ptrs) (local.get $strings))
      (then (call $proc_exit (i32.const 1))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (call $print (i32.const 76) (i32.const 4))
        (call $print_cstr
          (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $i) (i32.const 2)))))
        (call $print (i32.const 72) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
