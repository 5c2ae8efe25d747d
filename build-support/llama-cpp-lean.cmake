# Included after every project() call when llama-cpp-python is compiled by `make`
# (CMAKE_PROJECT_INCLUDE, see the Makefile's LLAMA_CMAKE_ARGS). llama-cpp-python forces
# llama.cpp's "common" library on, but its Python bindings load only libllama and libggml*:
# common (52 of the 127 files compiled) is never installed into the package, and compiling it
# is a third of the first install. Turning it off here, after llama-cpp-python's own
# set(... FORCE) and before llama.cpp reads the option, builds only what the library loads.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library (off: chatledger's lean build)" FORCE)

# No AMX. ggml's native build (-march=native) compiles its AMX matrix kernels whenever the
# CPU reports AMX, but a virtual machine can report AMX without letting a process use the
# tile registers: the first matrix multiply then dies of a general protection fault at
# `ldtilecfg` (seen on a 2-core Xeon VM, llama-cpp-python 0.3.36). SmolLM2-135M gains
# nothing from AMX, so the kernels are left out; an explicit -mno-* wins over -march=native
# whatever their order.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86)$"
   AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    include(CheckCCompilerFlag)
    check_c_compiler_flag("-mno-amx-tile" CHATLEDGER_HAS_NO_AMX)
    if(CHATLEDGER_HAS_NO_AMX)
        add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
    endif()
endif()
