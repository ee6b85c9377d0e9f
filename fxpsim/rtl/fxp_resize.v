// Sign-extend (W_OUT > W_IN) or keep the low W_OUT bits (W_OUT < W_IN) of a signed value
// (callers drop only bits that copy the sign, or wrap on purpose).
/* verilator lint_off UNUSEDSIGNAL */
module fxp_resize #(
    parameter integer W_IN  = 16,
    parameter integer W_OUT = 16
) (
    input  wire signed [W_IN-1:0]  x,
    output wire signed [W_OUT-1:0] y
);
    generate
        if (W_OUT > W_IN) begin : g_extend
            assign y = {{(W_OUT - W_IN){x[W_IN-1]}}, x};
        end else begin : g_keep
            assign y = x[W_OUT-1:0];
        end
    endgenerate
endmodule
/* verilator lint_on UNUSEDSIGNAL */
