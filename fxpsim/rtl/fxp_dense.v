// fxpsim dense layer on P fxp_pe lanes: y[n] = act(requant(bias[n] + sum_k x[k] * w[k][n])),
// k = 0..K-1 in order (fxpsim's sequential order), neurons in groups of P: group g runs
// n = g*P .. g*P + P-1 at once, one PE each, every PE reading the same x[k] (P = 1: one neuron
// at a time).
//
// Memories (fxpsim export --vectors files, read by $readmemh at elaboration):
//   W_FILE: K*N words of W_W bits, word n*K + k = w[k][n] (neuron-major: the K weights of
//           neuron 0, then neuron 1, ...); B_FILE: N words of W_B bits, word n = bias[n].
// Protocol: with x_ready high, stream the K inputs x[0..K-1] (x_valid, x_data), one per cycle.
// After the K-th the layer computes (x_ready low): per group one load cycle, K MAC cycles, then
// one output cycle per neuron of the group, in which y_valid is high with y_index = n, y, acc
// (its final accumulator), ovf_count (its additions whose result left the BW_ACC range) and
// cast_count (its products that left the BW_ACC range when cast, PRODUCT_CAST = 1). y_valid
// stays high over a group's outputs. After neuron N-1, x_ready rises for the next vector.
// ceil(N / P) * (K + 1) + N cycles per vector. Weights and biases are read asynchronously (P
// read ports of distributed ROM); a BRAM version registers the addresses one cycle earlier.
module fxp_dense #(
    parameter integer K             = 4,
    parameter integer N             = 2,
    parameter integer P             = 1,
    parameter        W_FILE        = "w.mem",
    parameter        B_FILE        = "b.mem",
    parameter integer W_X           = 8,
    parameter integer X_SIGNED      = 1,
    parameter integer W_W           = 8,
    parameter integer W_SIGNED      = 1,
    parameter integer W_B           = 16,
    parameter integer BIAS_SHIFT    = 0,
    parameter integer BW_ACC        = 16,
    parameter integer OVERFLOW      = 0,
    parameter integer PRODUCT_SHIFT = 0,
    parameter integer PRODUCT_ROUND = 2,
    parameter integer PRODUCT_CAST  = 0,
    parameter integer W_Y           = 8,
    parameter integer Y_SIGNED      = 1,
    parameter integer SHIFT         = 0,
    parameter integer ROUND         = 0,
    parameter integer OUT_WRAP      = 0,
    parameter integer RELU          = 0,
    parameter integer CNT_W         = 32
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              x_valid,
    input  wire [W_X-1:0]    x_data,
    output wire              x_ready,
    output wire              y_valid,
    output wire [31:0]       y_index,
    output wire [W_Y-1:0]    y,
    output wire [BW_ACC-1:0] acc,
    output wire [CNT_W-1:0]  ovf_count,
    output wire [CNT_W-1:0]  cast_count
);
    localparam integer KA = (K > 1) ? $clog2(K) : 1;
    localparam integer PA = (P > 1) ? $clog2(P) : 1;
    localparam integer WA = (K * N > 1) ? $clog2(K * N) : 1;   // weight address bits
    localparam integer K_LAST_INT = K - 1, P_LAST_INT = P - 1, PK_INT = P * K;
    localparam [KA-1:0] K_LAST = K_LAST_INT[KA-1:0];
    localparam [PA-1:0] P_LAST = P_LAST_INT[PA-1:0];
    localparam [WA-1:0] PK = PK_INT[WA-1:0];
    localparam [1:0] S_INPUT = 2'd0, S_LOAD = 2'd1, S_MAC = 2'd2, S_OUT = 2'd3;

    reg [W_W-1:0] w_mem [0:K*N-1];
    reg [W_B-1:0] b_mem [0:N-1];
    reg [W_X-1:0] x_buf [0:K-1];
    initial begin
        $readmemh(W_FILE, w_mem);
        $readmemh(B_FILE, b_mem);
    end

    reg [1:0] state;
    reg [KA-1:0] k;          // input index (streaming and MAC)
    reg [31:0] n0;           // first neuron of the group
    reg [WA-1:0] w_base;     // n0 * K: its first weight
    reg [PA-1:0] lane;       // the lane on the output
    wire [31:0] n_out = n0 + {{(32 - PA){1'b0}}, lane};
    assign x_ready = (state == S_INPUT);
    assign y_valid = (state == S_OUT);
    assign y_index = n_out;

    always @(posedge clk) begin
        if (rst) begin
            state <= S_INPUT;
            k <= {KA{1'b0}};
            n0 <= 32'd0;
            w_base <= {WA{1'b0}};
            lane <= {PA{1'b0}};
        end else begin
            case (state)
                S_INPUT: if (x_valid) begin
                    x_buf[k] <= x_data;
                    if (k == K_LAST) begin
                        k <= {KA{1'b0}};
                        n0 <= 32'd0;
                        w_base <= {WA{1'b0}};
                        state <= S_LOAD;
                    end else begin
                        k <= k + 1'b1;
                    end
                end
                S_LOAD: state <= S_MAC;
                S_MAC: begin
                    if (k == K_LAST) begin
                        k <= {KA{1'b0}};
                        lane <= {PA{1'b0}};
                        state <= S_OUT;
                    end else begin
                        k <= k + 1'b1;
                    end
                end
                default: begin  // S_OUT: lane's neuron n_out on the output
                    if (n_out == N - 1) begin
                        state <= S_INPUT;
                    end else if (lane == P_LAST) begin
                        n0 <= n0 + P;
                        w_base <= w_base + PK;
                        state <= S_LOAD;
                    end else begin
                        lane <= lane + 1'b1;
                    end
                end
            endcase
        end
    end

    wire [WA-1:0] k_addr;    // k zero-extended to an address
    generate
        if (WA > KA) begin : g_kx
            assign k_addr = {{(WA - KA){1'b0}}, k};
        end else begin : g_k
            assign k_addr = k;
        end
    endgenerate

    wire [P*W_Y-1:0] y_all;
    wire [P*BW_ACC-1:0] acc_all;
    wire [P*CNT_W-1:0] ovf_all, cast_all;
    genvar p;
    generate
        for (p = 0; p < P; p = p + 1) begin : g_lane
            wire [31:0] n = n0 + p;
            wire active = (n < N);   // the last group may have idle lanes
            localparam integer OFF_INT = p * K;
            localparam [WA-1:0] OFF = OFF_INT[WA-1:0];
            wire [WA-1:0] w_addr = w_base + OFF + k_addr;  // idle lanes may wrap: never read
            fxp_pe #(
                .W_X(W_X), .X_SIGNED(X_SIGNED), .W_W(W_W), .W_SIGNED(W_SIGNED), .W_B(W_B),
                .BIAS_SHIFT(BIAS_SHIFT), .BW_ACC(BW_ACC), .OVERFLOW(OVERFLOW),
                .PRODUCT_SHIFT(PRODUCT_SHIFT), .PRODUCT_ROUND(PRODUCT_ROUND),
                .PRODUCT_CAST(PRODUCT_CAST), .W_Y(W_Y), .Y_SIGNED(Y_SIGNED), .SHIFT(SHIFT),
                .ROUND(ROUND), .OUT_WRAP(OUT_WRAP), .RELU(RELU), .CNT_W(CNT_W)
            ) u_pe (
                .clk(clk), .rst(rst),
                .load(state == S_LOAD), .bias(active ? b_mem[n] : {W_B{1'b0}}),
                .mac(state == S_MAC), .x(x_buf[k]), .w(active ? w_mem[w_addr] : {W_W{1'b0}}),
                .acc(acc_all[p*BW_ACC +: BW_ACC]), .ovf_count(ovf_all[p*CNT_W +: CNT_W]),
                .cast_count(cast_all[p*CNT_W +: CNT_W]), .y(y_all[p*W_Y +: W_Y])
            );
        end
    endgenerate
    assign y = y_all[lane*W_Y +: W_Y];
    assign acc = acc_all[lane*BW_ACC +: BW_ACC];
    assign ovf_count = ovf_all[lane*CNT_W +: CNT_W];
    assign cast_count = cast_all[lane*CNT_W +: CNT_W];
endmodule
