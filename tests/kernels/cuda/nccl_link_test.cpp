#define BOOST_TEST_MODULE kernels.cuda.nccl_link
#define BOOST_TEST_NO_MAIN
#include "tests/kernels/cuda/gpu_main.hpp"

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cuda/nccl_link.hpp"
#include "kernels/model/stage_link.hpp"
#include "messages/error.hpp"
#include "platform/cuda.hpp"
#include "platform/cuda_copy.hpp"
#include "platform/cuda_memory.hpp"

using namespace kvflow;
using namespace kvflow::model;

namespace {

// Hands a 256-token chunk of llama-3-8b's hidden state (f32) over `link`
// from device 0 to `receiver`, checks every byte and prints the time.
void check_link(stage_link& link, int receiver) {
  BOOST_TEST(std::string(link.kind()) == "nccl");
  const std::size_t n = 256 * 4096;
  std::vector<float> host(n), back(n, -1.0f);
  std::iota(host.begin(), host.end(), 0.25f);
  platform::device_buffer src(n * sizeof(float), 0);
  platform::copy_now(src.data(), host.data(), src.size(), cudaMemcpyHostToDevice);
  platform::device_buffer dst(n * sizeof(float), receiver);
  BOOST_REQUIRE(cudaMemset(dst.data(), 0, dst.size()) == cudaSuccess);
  link.send(src.data(), dst.data(), n * sizeof(float));  // the first call sets up the channels
  const int reps = 20;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) link.send(src.data(), dst.data(), n * sizeof(float));
  double per = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / reps;
  std::printf("nccl hand-off of %zu bytes (device 0 -> %d): %.3f ms\n", n * sizeof(float), receiver, per);
  BOOST_REQUIRE(cudaSetDevice(receiver) == cudaSuccess);
  platform::copy_now(back.data(), dst.data(), dst.size(), cudaMemcpyDeviceToHost);
  BOOST_TEST(back == host);
  BOOST_CHECK_THROW(link.send(src.data(), dst.data(), 6), error);  // not f32 activations
}

}  // namespace

// Stages on one GPU: a one-rank communicator that sends to itself (NCCL
// refuses two ranks on one device), its id passed as the Cap'n Proto message.
BOOST_AUTO_TEST_CASE(an_nccl_link_on_one_gpu_hands_activations_over) {
  auto link = make_nccl_link(0, 0, make_nccl_link_id(1, 0));
  check_link(*link, 0);
}

// Two ranks of one communicator in this process, where there are two GPUs.
BOOST_AUTO_TEST_CASE(an_nccl_link_between_two_gpus_hands_activations_over) {
  if (platform::cuda_device_count() < 2) {
    BOOST_TEST_MESSAGE("one GPU: the two-rank link is not exercised here");
    return;
  }
  auto link = make_nccl_link(0, 1, make_nccl_link_id(2, 1));
  check_link(*link, 1);
}

BOOST_AUTO_TEST_CASE(a_link_refuses_an_id_for_another_communicator_size) {
  BOOST_CHECK_THROW(make_nccl_link(0, 0, make_nccl_link_id(2, 1)), error);
}
