# Included after every project() call when llama-cpp-python is compiled by `make`
# (CMAKE_PROJECT_INCLUDE, see the Makefile's LLAMA_CMAKE_ARGS). llama-cpp-python forces
# llama.cpp's "common" library on, but its Python bindings load only libllama and libggml*:
# common (52 of the 127 files compiled) is never installed into the package, and compiling it
# is a third of the first install. Turning it off here, after llama-cpp-python's own
# set(... FORCE) and before llama.cpp reads the option, builds only what the library loads.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library (off: chatledger's lean build)" FORCE)
