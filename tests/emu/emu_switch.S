/* emu_switch.S - the kernel emulator's coroutine switch (x86-64, System V): saves the callee-saved
 * registers on the current stack, stores its pointer in *save_sp, and resumes the stack load_sp.
 *   void bf_emu_switch(void **save_sp, void *load_sp);
 * A new coroutine's stack (emu_runtime.cpp, new_stack_frame) holds six zero registers and the
 * address of bf_emu_thread_entry, which calls bf_emu_thread_main and never returns. */
    .text
    .globl bf_emu_switch
    .type bf_emu_switch, @function
bf_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size bf_emu_switch, .-bf_emu_switch

    .globl bf_emu_thread_entry
    .type bf_emu_thread_entry, @function
bf_emu_thread_entry:
    call bf_emu_thread_main
    ud2
    .size bf_emu_thread_entry, .-bf_emu_thread_entry

    .section .note.GNU-stack,"",@progbits
