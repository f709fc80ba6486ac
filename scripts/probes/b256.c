/* batch-256 condensed layer probes: X[256][in] -> Y[256][out]. usage: ./b256 in out sparsity [ncalls] */
#include "../../suite/bench/probes/probe_kernels.h"
/* compute-only part (no transposes) for zmm tw64, to isolate the core loop */
int main(int argc,char**argv){
  int in=atoi(argv[1]),out=atoi(argv[2]);double sp=atof(argv[3]);int nc=argc>4?atoi(argv[4]):30;int reps=7;double tmin,tmed;
  int k=(int)lround((1-sp)*in);int*idx=malloc((long)out*k*4);make_mask(in,out,k,idx);
  float*v=malloc((long)out*k*4);uint16_t*ix=malloc((long)out*k*2);for(long i=0;i<(long)out*k;i++){v[i]=frnd();ix[i]=idx[i];}
  float*X=aligned_alloc(64,(long)NB*in*4),*Y=aligned_alloc(64,(long)NB*out*4),*bias=malloc(out*4);for(long i=0;i<(long)NB*in;i++)X[i]=frnd();for(int j=0;j<out;j++)bias[j]=frnd();
  XT=aligned_alloc(64,(long)NB*in*4);YT=aligned_alloc(64,(long)NB*out*4);
  printf("== batch %d %d->%d sparsity %.2f k=%d; useful GFLOP %.3f; FMA-peak bound (235 GF/s) %.0f us\n",NB,in,out,sp,k,2.0*NB*out*k/1e9,2.0*NB*out*k/235e3);loadavg("before");
  struct{const char*n;void(*f)(int,int,int,const float*,const uint16_t*,const float*,const float*,float*);int tw;}V[]={
   {"zmm TW=64 gatherT+fusedT",z2_tw64,64},{"zmm TW=32 gatherT+fusedT",z2_tw32,32},{"zmm TW=128 gatherT+fusedT",z2_tw128,128},{"zmm TW=64 (4 acc)",z_tw64,64},{"zmm TW=32 (2x2 acc, split k)",z_tw32,32},{"zmm TW=128 (8 acc)",z_tw128,128},{"ymm TW=32 (4 acc)",y_tw32,32},{"ymm TW=64 (8 acc)",y_tw64,64}};
  for(unsigned q=0;q<sizeof V/sizeof V[0];q++){TIME(V[q].n,nc,reps,V[q].f(in,out,k,v,ix,X,bias,Y));
    double e=0;for(int s=0;s<5;s++){int b=rnd()%NB,j=rnd()%out;double r=bias[j];for(int t=0;t<k;t++)r+=(double)v[(long)j*k+t]*X[(long)b*in+idx[(long)j*k+t]];if(fabs(r-Y[(long)b*out+j])>e)e=fabs(r-Y[(long)b*out+j]);}
    printf("   %.1f useful GFLOP/s, XT tile %ld KB, maxerr %.1e\n",2.0*NB*out*k/1e3/tmin,(long)in*V[q].tw*4/1024,e);}
  loadavg("after");}
